"""The degraded answer: the sentences of the top sources that best match the question, each cited."""

from __future__ import annotations

import math
from collections.abc import Sequence

from query_service.sources import Source
from query_service.text_terms import SENTENCE_END, terms

MIN_WORDS = 4
FALLBACK_WORDS = 40  # a top source without a sentence of MIN_WORDS: this many of its first words


def sentences(text: str) -> list[str]:
    """Sentences of prose; markers of headings and bullets are stripped, fragments under MIN_WORDS words (a heading
    on its own line, a short bullet) left out. A heading run into its first sentence (a focused source is one line)
    stays with it."""
    found = []
    for part in SENTENCE_END.split(text):
        sentence = part.strip().lstrip("#-*• ").strip()
        if len(sentence.split()) < MIN_WORDS:
            continue
        found.append(sentence)
    return found


def quotable(source: Source) -> str:
    """What an extractive answer quotes from: a text source's best chunk whole (its prompt text may be focused to a
    few words, with sentences cut), an image's description."""
    return source.best.text if source.modality == "text" and source.best.text.strip() else source.text


def extractive_answer(
    question: str, sources: Sequence[Source], max_sentences: int = 3, top_sources: int = 3, fallback: bool = True
) -> str:
    """Up to ``max_sentences`` sentences of the ``top_sources`` best sources, scored by question-term overlap
    (length-normalized), in source order, each followed by its citation. When nothing overlaps: with ``fallback``
    the top source's first sentence (its first words when it has none), else an empty string; an empty string
    without sources."""
    wanted = terms(question)
    scored: list[tuple[float, int, int, str]] = []
    for rank, source in enumerate(sources[:top_sources]):
        for position, sentence in enumerate(sentences(quotable(source))):
            words = terms(sentence)
            overlap = len(wanted & words)
            if overlap:
                scored.append((overlap / math.sqrt(len(words)), rank, position, sentence))
    best = sorted(scored, key=lambda s: (-s[0], s[1], s[2]))[:max_sentences]
    if not best:
        if not fallback or not sources:
            return ""
        top = sources[0]
        first = sentences(quotable(top)) or [" ".join(quotable(top).split()[:FALLBACK_WORDS])]
        return f"{first[0]} [{top.number}]" if first[0] else ""
    picked = sorted(best, key=lambda s: (s[1], s[2]))
    return " ".join(f"{sentence} [{sources[rank].number}]" for _, rank, _, sentence in picked)


def supporting_sources(answer: str, sources: Sequence[Source], min_share: float = 0.5) -> list[int]:
    """The sources an answer's sentences came from, for a model that cites nothing (small models copy rather than
    cite): a sentence belongs to the source holding the largest share of its content words, when that share is at
    least ``min_share``; numbers in first-supported order."""
    found: list[int] = []
    source_terms = [(s.number, terms(s.text)) for s in sources]
    for part in SENTENCE_END.split(answer):
        words = terms(part)
        if len(words) < 2 or not source_terms:
            continue
        number, share = max(((n, len(words & t) / len(words)) for n, t in source_terms), key=lambda x: x[1])
        if share >= min_share and number not in found:
            found.append(number)
    return found
