"""The LLM worker of `bench.ask`: the production worker (`consumers.llm_worker`, same settings) whose generator
also appends one JSON line per generation to ``$BENCH_ASK_TIMINGS``: when the model was called, its first and last
text (``time.monotonic``), the token counts and the chat messages, so the bench can tell the model's own time from
the request-reply path around it and replay the same prompt on the bare model."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from consumers.llm_worker.__main__ import make_generator
from consumers.llm_worker.generator import ChatMessage, Delta, GenerationParams, Generator
from consumers.llm_worker.settings import LlmWorkerSettings
from consumers.llm_worker.worker import LlmWorker
from mmrag.service import service_main
from mmrag.telemetry import Probes

TIMINGS_ENV = "BENCH_ASK_TIMINGS"


@dataclasses.dataclass
class Timing:
    """One generation as the model saw it (monotonic seconds)."""

    start: float
    first: float = 0.0
    last: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    messages: list[dict[str, str]] = dataclasses.field(default_factory=list)

    @property
    def first_token_s(self) -> float:
        return self.first - self.start

    @property
    def tokens_per_s(self) -> float:
        """Decoding speed after the first token (the first one is the prompt's cost)."""
        return (self.completion_tokens - 1) / (self.last - self.first) if self.last > self.first else 0.0


def timed_stream(
    gen: Generator,
    messages: list[ChatMessage],
    params: GenerationParams,
    timing: Timing,
    cancel: threading.Event | None = None,
) -> Iterator[Delta]:
    """``gen.stream``, filling ``timing`` as the deltas pass."""
    timing.start, timing.messages = time.monotonic(), [dataclasses.asdict(m) for m in messages]
    for delta in gen.stream(messages, params, cancel):
        if delta.text:
            timing.last = time.monotonic()
            timing.first = timing.first or timing.last
        if delta.finish_reason:
            timing.prompt_tokens, timing.completion_tokens = delta.prompt_tokens, delta.completion_tokens
        yield delta


class TimedGenerator:
    """A Generator that records every generation's Timing as a JSON line in ``out``."""

    def __init__(self, inner: Generator, out: Path) -> None:
        self.inner = inner
        self.out = out
        self.model = inner.model
        self.concurrency = inner.concurrency

    @property
    def context_tokens(self) -> int:  # known once the model is loaded
        return self.inner.context_tokens

    @context_tokens.setter
    def context_tokens(self, tokens: int) -> None:
        self.inner.context_tokens = tokens

    def warm_up(self) -> None:
        self.inner.warm_up()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def stream(
        self, messages: list[ChatMessage], params: GenerationParams, cancel: threading.Event | None = None
    ) -> Iterator[Delta]:
        timing = Timing(0.0)
        yield from timed_stream(self.inner, messages, params, timing, cancel)
        with open(self.out, "a") as out:
            out.write(json.dumps(dataclasses.asdict(timing)) + "\n")


def build(settings: LlmWorkerSettings, probes: Probes) -> LlmWorker:
    timed = TimedGenerator(make_generator(settings), Path(os.environ[TIMINGS_ENV]))
    return LlmWorker(settings, timed, probes)


if __name__ == "__main__":
    sys.exit(service_main("llm_worker", LlmWorkerSettings, build))
