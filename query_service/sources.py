"""Retrieval -> prompt fusion on the query side: the numbered sources an answer may cite, and the citations it made.

One source per object (its best chunks, deduplicated, in reading order), best object first; an image is described
by the text OCR found in it and its key. The worker trims the sources to its model's context (its tokenizer)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mmrag.pb.events_pb2 import Modality, PromptSource, SearchHit
from mmrag.pb.query_pb2 import AskSource
from query_service.search import ShardHit

SNIPPET_CHARS = 300
INSTRUCTION = (
    "You answer questions using only the numbered sources you are given. Cite the sources you use with their "
    "numbers in square brackets, like [1]. If the sources do not contain the answer, say that they do not."
)
CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")


@dataclass(frozen=True)
class Source:
    number: int
    best: SearchHit  # the highest-scoring chunk: score and citation span
    text: str  # what the prompt shows
    modality: str  # "text" or "image"

    def prompt_source(self) -> PromptSource:
        image = self.modality == "image"
        return PromptSource(
            number=self.number,
            label=f"image {self.best.object_id}" if image else self.best.object_id,
            text=self.text,
            modality=Modality.MODALITY_IMAGE if image else Modality.MODALITY_TEXT,
        )

    def ask_source(self) -> AskSource:
        b = self.best
        snippet = b.text if len(b.text) <= SNIPPET_CHARS else b.text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"
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


def select_sources(hits: Sequence[ShardHit], max_sources: int, chunks_per_source: int) -> list[Source]:
    """Groups hits by object in the search's order (best first: the fusion's, not necessarily by score), keeps each
    object's best distinct chunks in reading order."""
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
        sources.append(Source(number, best, text, "text"))
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
