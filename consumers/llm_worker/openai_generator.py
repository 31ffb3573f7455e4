"""Generator adapter: an OpenAI-compatible server (`/v1/chat/completions`, streamed as server-sent events).

Works with vLLM, llama.cpp's server, llama-cpp-python's `llama_cpp.server` and hosted APIs."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import httpx

from consumers.llm_worker.generator import ChatMessage, Delta, GenerationError, GenerationParams, fold_system

log = logging.getLogger(__name__)
# No tokenizer endpoint is common to every OpenAI-compatible server: estimate conservatively (English BPE averages
# about 4 characters a token; 3 leaves room for code, numbers and other languages).
CHARS_PER_TOKEN_ESTIMATE = 3


class OpenAIGenerator:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str,
        context_tokens: int,
        timeout_s: float,
        concurrency: int = 4,
        system_role: bool = True,
    ) -> None:
        """``system_role=False`` for servers whose chat template drops system messages (Gemma's)."""
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.context_tokens = context_tokens
        self.concurrency = concurrency
        self.system_role = system_role
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_s, connect=5.0))

    def warm_up(self) -> None:
        """Checks the server lists models (the first one is taken when none was set) and answers a tiny prompt."""
        try:
            listed = self._client.get(f"{self.base_url}/models")
            listed.raise_for_status()
        except httpx.HTTPError as exc:
            raise GenerationError(f"{self.base_url}/models: {exc}; start the server or fix MMRAG_LLM_BASE_URL") from exc
        if not self.model:
            self.model = listed.json()["data"][0]["id"]
        reply = "".join(d.text for d in self.stream([ChatMessage("user", "Say OK.")], GenerationParams(4)))
        log.info("OpenAI-compatible server %s, model %s, warm-up reply %r", self.base_url, self.model, reply)

    def count_tokens(self, text: str) -> int:
        return len(text) // CHARS_PER_TOKEN_ESTIMATE + 1

    def stream(
        self, messages: list[ChatMessage], params: GenerationParams, cancel: threading.Event | None = None
    ) -> Iterator[Delta]:
        if not self.system_role:
            messages = fold_system(messages)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "stream_options": {"include_usage": True},
        }
        if params.top_p:
            body["top_p"] = params.top_p
        try:
            with self._client.stream("POST", f"{self.base_url}/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise GenerationError(f"{self.base_url}: HTTP {response.status_code}: {response.text[:300]}")
                yield from self._events(
                    response.iter_lines(), cancel, sum(self.count_tokens(m.content) for m in messages)
                )
        except httpx.HTTPError as exc:
            raise GenerationError(f"{self.base_url}: {type(exc).__name__}: {exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise GenerationError(f"{self.base_url}: malformed stream event ({exc})") from exc

    def _events(self, lines: Iterator[str], cancel: threading.Event | None, prompt_estimate: int) -> Iterator[Delta]:
        """Deltas of the SSE stream; token counts from the server's usage event, else (servers that send none,
        like llama_cpp.server) content events counted and the prompt estimated."""
        finish = "stop"
        usage: dict[str, Any] = {}
        pieces = 0
        for line in lines:
            if not line.startswith("data:"):
                continue  # SSE comments, keep-alives and blank separators
            data = line[5:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece:
                    pieces += 1
                    yield Delta(piece)
                finish = choice.get("finish_reason") or finish
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
        yield Delta(
            "", finish, int(usage.get("prompt_tokens", prompt_estimate)), int(usage.get("completion_tokens", pieces))
        )
