"""The Generator port: a chat model that streams an answer. Adapters: llama.cpp in-process, OpenAI-compatible HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ChatMessage:
    role: str  # system | user | assistant
    content: str


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 256
    temperature: float = 0.0  # greedy: the most faithful to the sources for small models
    top_p: float = 0.0  # 0 = the backend's default


@dataclass(frozen=True)
class Delta:
    """A piece of the answer. The last one of a stream has ``finish_reason`` and the token counts."""

    text: str
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


def fold_system(messages: list[ChatMessage]) -> list[ChatMessage]:
    """For chat templates without a system turn (Gemma's drops it): the system text opens the first user turn."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    rest = [m for m in messages if m.role != "system"]
    if not system:
        return rest
    if rest and rest[0].role == "user":
        return [ChatMessage("user", f"{system}\n\n{rest[0].content}"), *rest[1:]]
    return [ChatMessage("user", system), *rest]


class GenerationError(Exception):
    """The backend failed (refused, unreachable, broke off): the requester gets an error chunk and degrades."""


class Generator(Protocol):
    """One model per process; ``stream`` is called from one thread at a time unless ``concurrency`` says more."""

    model: str
    context_tokens: int
    concurrency: int

    def warm_up(self) -> None:
        """Loads the model (or checks the server answers) and runs one tiny generation; raises when it cannot."""

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` by the model's own tokenizer (an estimate where the backend cannot tell)."""

    def stream(
        self, messages: list[ChatMessage], params: GenerationParams, cancel: threading.Event | None = None
    ) -> Iterator[Delta]:
        """Streams the reply; stops early (finish_reason "cancelled") once ``cancel`` is set; GenerationError on
        a backend failure."""
