"""Generator adapter: llama.cpp in-process (llama-cpp-python) over a GGUF file; one model, one stream at a time."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from consumers.llm_worker.generator import ChatMessage, Delta, GenerationError, GenerationParams, fold_system
from consumers.llm_worker.models import gguf_path, packaged_model
from consumers.llm_worker.native_build import check_installed

log = logging.getLogger(__name__)


class LlamaCppGenerator:
    """llama.cpp applies the GGUF's own chat template (``create_chat_completion``); greedy by default."""

    concurrency = 1  # one llama.cpp context is not safe to share between concurrent generations

    def __init__(
        self,
        model: str,
        threads: int,
        context_tokens: int,
        model_path: Path | None = None,
        chat_format: str | None = None,
        system_role: bool = True,
        seed: int = 0,
        threads_batch: int | None = None,
    ) -> None:
        """``model`` names a packaged GGUF (models.py), located at warm-up, with its chat format; a ``model_path``
        is used as it is (its GGUF chat template unless ``chat_format`` names one). ``threads`` decode (one token
        at a time: memory-bound, extra threads mostly wait at barriers), ``threads_batch`` (None: as ``threads``)
        evaluate the prompt (a matrix product over every prompt token: compute-bound, it splits well)."""
        self.model = model
        self.model_path = model_path
        packaged = None if model_path else packaged_model(model)
        self.chat_format = packaged.chat_format if packaged else chat_format
        self.system_role = packaged.system_role if packaged else system_role
        self.threads = threads
        self.threads_batch = threads if threads_batch is None else threads_batch
        self.context_tokens = context_tokens
        self.seed = seed
        self._llm: Any = None

    def warm_up(self) -> None:
        """Refuses a llama.cpp library built for another CPU (NativeBuildError, before it can crash), loads the
        model and evaluates a multi-token chat prompt: the self-test a natively built library died in (SIGSEGV)."""
        from llama_cpp import Llama

        features = check_installed()
        log.info("llama.cpp library compiled for %s", ", ".join(sorted(features)) or "baseline x86-64")
        start = time.monotonic()
        path = self.model_path or gguf_path(self.model)
        self._llm = Llama(
            model_path=str(path),
            n_ctx=self.context_tokens,
            n_threads=self.threads or None,
            n_threads_batch=self.threads_batch or None,
            seed=self.seed,
            chat_format=self.chat_format,
            verbose=False,
        )
        self.context_tokens = int(self._llm.n_ctx())
        loaded = time.monotonic() - start
        reply = "".join(d.text for d in self.stream([ChatMessage("user", "Say OK.")], GenerationParams(4)))
        log.info(
            "llama.cpp %s loaded in %.2fs (%d ctx, %s threads, %s for prompts), warm-up reply %r",
            path.name,
            loaded,
            self.context_tokens,
            self.threads or "auto",
            self.threads_batch or "auto",
            reply,
        )

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=False))

    def stream(
        self, messages: list[ChatMessage], params: GenerationParams, cancel: threading.Event | None = None
    ) -> Iterator[Delta]:
        if not self.system_role:
            messages = fold_system(messages)
        kwargs: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "seed": self.seed,
        }
        if params.top_p:
            kwargs["top_p"] = params.top_p
        text, finish = [], "stop"
        try:
            for chunk in self._llm.create_chat_completion(**kwargs):
                choice = chunk["choices"][0]
                piece = choice["delta"].get("content") or ""
                if piece:
                    text.append(piece)
                    yield Delta(piece)
                finish = choice.get("finish_reason") or finish
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
        except (RuntimeError, ValueError) as exc:
            raise GenerationError(f"llama.cpp {self.model}: {exc}") from exc
        completion = self.count_tokens("".join(text))
        prompt = max(0, int(self._llm.n_tokens) - completion)
        yield Delta("", finish, prompt, completion)
