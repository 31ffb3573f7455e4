"""Chunking by the embedding model's own tokenizer, sized to its window, with overlap and source spans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TextChunk:
    index: int
    text: str
    char_start: int
    char_end: int
    tokens: int = 0  # model tokens including [CLS]/[SEP]: what the chunk costs a forward pass


def chunk_text(text: str, tokenizer: Any, max_tokens: int = 256, overlap: int = 32) -> list[TextChunk]:
    """Windows of at most ``max_tokens`` model tokens (special tokens included), ``overlap`` tokens shared.

    Spans are character offsets into ``text``; whitespace-only text gives no chunks.
    """
    window = max_tokens - 2  # room for [CLS]/[SEP]
    if window <= overlap:
        raise ValueError(f"max_tokens {max_tokens} leaves no room beside an overlap of {overlap}")
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    chunks: list[TextChunk] = []
    start = 0
    while start < len(offsets):
        end = min(start + window, len(offsets))
        char_start, char_end = offsets[start][0], offsets[end - 1][1]
        chunks.append(TextChunk(len(chunks), text[char_start:char_end], char_start, char_end, end - start + 2))
        if end == len(offsets):
            break
        start = end - overlap
    return chunks
