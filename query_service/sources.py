"""Retrieval -> prompt fusion on the query side: the numbered sources an answer may cite, and the citations it made.

One source per object (its best chunks, deduplicated, in reading order), best object first; an image is described
by the text OCR found in it and its key. A long text source is focused on the question: its sentences that share
most words with it, within a word budget (the model's first token costs every prompt token). The worker then trims
the sources to its model's context (its tokenizer)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mmrag import pii
from mmrag.pb.events_pb2 import Modality, PromptSource, SearchHit
from mmrag.pb.query_pb2 import AskSource
from query_service.text_terms import SENTENCE_END, terms
from query_service.types import ShardHit

SNIPPET_CHARS = 300
INSTRUCTION = (
    "You answer questions using only the numbered sources you are given. Cite the sources you use with their "
    "numbers in square brackets, like [1]. If the sources do not contain the answer, say that they do not."
)
CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
GAP = " … "


@dataclass(frozen=True)
class Source:
    number: int
    best: SearchHit  # the highest-scoring chunk: score and citation span
    text: str  # what the prompt shows
    modality: str  # "text" or "image"

    def prompt_source(self, with_bucket: bool = True) -> PromptSource:
        """The source as the model sees it, labelled by its object id, or by its key alone (``with_bucket``
        False: a generated bucket name is ~8 tokens of noise a source, and every prompt token delays the first)."""
        image = self.modality == "image"
        name = self.best.object_id if with_bucket else self.best.object_id.split("/", 1)[-1]
        return PromptSource(
            number=self.number,
            label=f"image {name}" if image else name,
            text=self.text,
            modality=Modality.MODALITY_IMAGE if image else Modality.MODALITY_TEXT,
        )

    def ask_source(self) -> AskSource:
        b = self.best
        text = pii.redact(b.text).text  # part of the answer stream, redacted like the answer (before the cut: a
        # card number cut in half would fail its Luhn check and stay)
        snippet = text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"
        return AskSource(
            number=self.number,
            object_id=b.object_id,
            snippet=snippet,
            score=b.score,
            modality=self.modality,
            version=b.version,
            page=b.page,
            char_start=b.char_start,
            char_end=b.char_end,
            chunk_index=b.chunk_index,
        )


def describe_image(hit: SearchHit) -> str:
    key = hit.object_id.split("/", 1)[-1]
    ocr = hit.text.strip()
    return f"An image file named {key}." + (f" Text in the image: {ocr}" if ocr else " No text was found in it.")


def focus(text: str, question: str, max_words: int) -> str:
    """``text`` within ``max_words`` words: its sentences that best match ``question`` (shared content words,
    length-normalized), then the earliest others while words are left, kept in reading order with " … " where
    sentences were left out. ``text`` itself when it fits or ``max_words`` is 0."""
    if max_words <= 0 or len(text.split()) <= max_words:
        return text
    parts = [p.strip() for p in SENTENCE_END.split(text) if p.strip() and p.strip() != "…"]
    wanted = terms(question)

    def score(part: str) -> float:
        words = terms(part)
        return len(wanted & words) / math.sqrt(len(words)) if words else 0.0

    ranked = sorted(range(len(parts)), key=lambda i: (-score(parts[i]), i))
    keep, used = set(), 0
    for i in ranked:
        size = len(parts[i].split())
        if used + size <= max_words:
            keep.add(i)
            used += size
    if not keep:  # the best sentence alone is over the budget: its first words
        return " ".join(parts[ranked[0]].split()[:max_words]) + GAP.rstrip()
    out, last = GAP.lstrip() if min(keep) > 0 else "", -1
    for i in sorted(keep):
        out += ("" if last < 0 else " " if i == last + 1 else GAP) + parts[i]
        last = i
    return out + (GAP.rstrip() if last != len(parts) - 1 else "")


def select_sources(
    hits: Sequence[ShardHit], max_sources: int, chunks_per_source: int, question: str = "", source_words: int = 0
) -> list[Source]:
    """Groups hits by object in the search's order (best first: the fusion's, not necessarily by score), keeps each
    object's best distinct chunks in reading order, each text source focused on ``question`` within
    ``source_words`` words (0: whole chunks)."""
    by_object: dict[str, list[SearchHit]] = {}
    for shard_hit in hits:
        chunks = by_object.setdefault(shard_hit.hit.object_id, [])
        if len(chunks) < chunks_per_source and all(c.text != shard_hit.hit.text for c in chunks):
            chunks.append(shard_hit.hit)
    sources = []
    for number, chunks in enumerate(list(by_object.values())[:max_sources], start=1):
        best = chunks[0]
        if best.has_image:
            sources.append(Source(number, best, describe_image(best), "image"))
            continue
        text = "\n…\n".join(c.text.strip() for c in sorted(chunks, key=lambda c: c.chunk_index))
        sources.append(Source(number, best, focus(text, question, source_words), "text"))
    return sources


def cited_numbers(answer: str, given: int) -> list[int]:
    """The source numbers an answer cites ([1], [2, 3], [1][4]) that are 1..given, in first-cited order."""
    seen: list[int] = []
    for group in CITATION.findall(answer):
        for part in re.split(r"[,;]", group):
            number = int(part)
            if 1 <= number <= given and number not in seen:
                seen.append(number)
    return seen
