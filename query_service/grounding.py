"""Guardrails on an answer before it is given: is it grounded in the sources, and was anything relevant found.

An answer is ungrounded when it cites a number it was not given ([7] of 5 sources), or cites nothing and none of
its sentences comes from a source (the inference of ``supporting_sources``, as for citations), and when it is a
degenerate loop (one phrase repeated until the token limit: citing a source does not make that an answer). Ask then
falls back to the extractive answer (degraded, reason ``ungrounded``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from query_service.extractive import supporting_sources
from query_service.search import ShardHit
from query_service.sources import CITATION, Source, cited_numbers

UNGROUNDED = "ungrounded"
REPEAT_RUN = 8  # the same phrase this many times in a row: a loop, not prose
NOT_FOUND = "Not found in the indexed documents: nothing there matches the question closely enough."


def foreign_citations(answer: str, given: int) -> list[int]:
    """Numbers cited in ``answer`` outside 1..given, in first-cited order."""
    found: list[int] = []
    for group in CITATION.findall(answer):
        for part in re.split(r"[,;]", group):
            number = int(part)
            if not 1 <= number <= given and number not in found:
                found.append(number)
    return found


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


def grounding_problem(answer: str, given: Sequence[Source]) -> str | None:
    """Why ``answer`` is not grounded in the ``given`` sources (or is a degenerate loop), or None when it is."""
    loop = degenerate(answer)
    if loop is not None:
        return loop
    foreign = foreign_citations(answer, len(given))
    if foreign:
        return f"cites {', '.join(f'[{n}]' for n in foreign)} but was given {len(given)} sources"
    if not cited_numbers(answer, len(given)) and not supporting_sources(answer, given):
        return "cites no source and no sentence of it comes from one"
    return None


def nothing_relevant(hits: Sequence[ShardHit], min_score: float) -> bool:
    """True when no hit reaches ``min_score`` (no hit at all included): answer NOT_FOUND without generating."""
    return max((h.hit.score for h in hits), default=float("-inf")) < min_score
