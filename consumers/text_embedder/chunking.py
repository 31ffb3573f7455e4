"""Chunking by the embedding model's own tokenizer, sized to its window, with overlap and source spans.

The text is tokenized in segments cut at whitespace (WordPiece splits at whitespace first, so the tokens are the
same), and counting stops as soon as the chunk cap is passed: an over-long object is refused after reading only
what the cap allows, never tokenized whole (a 60 MB text once took 11.5 GB that way)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

SEGMENT_CHARS = 1 << 16


@dataclass(frozen=True)
class TextChunk:
    index: int
    text: str
    char_start: int
    char_end: int
    tokens: int = 0  # model tokens including [CLS]/[SEP]: what the chunk costs a forward pass


class TooManyChunks(Exception):  # noqa: N818 - a limit, not a failure of the code
    """The text needs more chunks than allowed; ``tokens`` is how far counting went before it stopped."""

    def __init__(self, max_chunks: int, tokens: int) -> None:
        self.max_chunks = max_chunks
        self.tokens = tokens
        super().__init__(f"more than {max_chunks} chunks (counting stopped at {tokens} tokens)")


def token_cap(max_chunks: int, max_tokens: int, overlap: int) -> int:
    """The most tokens that fit in ``max_chunks`` windows of ``max_tokens`` sharing ``overlap`` tokens."""
    window = max_tokens - 2
    return 0 if max_chunks <= 0 else window + (max_chunks - 1) * (window - overlap)


def chunk_text(
    text: str,
    tokenizer: Any,
    max_tokens: int = 256,
    overlap: int = 32,
    max_chunks: int | None = None,
    check: Callable[[], None] | None = None,
) -> list[TextChunk]:
    """Windows of at most ``max_tokens`` model tokens (special tokens included), ``overlap`` tokens shared.

    Spans are character offsets into ``text``; whitespace-only text gives no chunks. Raises TooManyChunks once the
    text is known to need more than ``max_chunks``; ``check`` runs after each segment (a time budget raises there).
    """
    window = max_tokens - 2  # room for [CLS]/[SEP]
    if window <= overlap:
        raise ValueError(f"max_tokens {max_tokens} leaves no room beside an overlap of {overlap}")
    cap = None if max_chunks is None else token_cap(max_chunks, max_tokens, overlap)
    offsets: list[tuple[int, int]] = []
    for start, segment in _segments(text):
        found = tokenizer(segment, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        found = found["offset_mapping"]
        offsets += [(start + a, start + b) for a, b in found]
        if cap is not None and len(offsets) > cap:
            raise TooManyChunks(max_chunks or 0, len(offsets))
        if check is not None:
            check()
    return _windows(text, offsets, window, overlap)


def _segments(text: str) -> Iterator[tuple[int, str]]:
    """(start, piece) pieces of about SEGMENT_CHARS, each cut after whitespace when there is any; one at a time."""
    start = 0
    while start < len(text):
        end = min(start + SEGMENT_CHARS, len(text))
        if end < len(text):
            cut = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            end = cut + 1 if cut > start else end
        yield start, text[start:end]
        start = end


def _windows(text: str, offsets: list[tuple[int, int]], window: int, overlap: int) -> list[TextChunk]:
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
