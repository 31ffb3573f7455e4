"""Guardrails on an Ask before and while it is answered: was anything relevant found, and is the model looping.

Whether a finished answer is supported by its sources is support.py's (sentence by sentence); a loop is caught
here while it streams (one phrase of 1-4 words repeated until the token limit: "Kafka Kafka Kafka ..."), so the
generation stops early, and the support check then replaces it."""

from __future__ import annotations

from collections.abc import Sequence

from query_service.types import ShardHit

UNGROUNDED = "ungrounded"
REPEAT_RUN = 8  # the same phrase this many times in a row: a loop, not prose
NOT_FOUND = "Not found in the indexed documents: nothing there matches the question closely enough."


def degenerate(answer: str, run: int = REPEAT_RUN) -> str | None:
    """Why ``answer`` is a degenerate loop (greedy decoding of a small model can repeat one phrase until the token
    limit: "Kafka Kafka Kafka ..."), or None: a phrase of 1-4 words repeated ``run`` times in a row."""
    words = answer.split()
    for size in range(1, 5):
        for start in range(size):  # phrases at every alignment
            repeats = 1
            for i in range(start + size, len(words) - size + 1, size):
                repeats = repeats + 1 if words[i : i + size] == words[i - size : i] else 1
                if repeats >= run:
                    return f"repeats {' '.join(words[i : i + size])!r} {repeats} times in a row"
    return None


def nothing_relevant(hits: Sequence[ShardHit], min_score: float) -> bool:
    """True when no hit reaches ``min_score`` (no hit at all included): answer NOT_FOUND without generating."""
    return max((h.hit.score for h in hits), default=float("-inf")) < min_score
