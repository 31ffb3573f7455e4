"""A keyword (BM25) index over the chunk text of one shard, beside its vector index: exact identifiers, error codes
and rare words that a dense model misses, and the answers when the vector store is down.

bm25s indexes are static: ``rebuild(rows)`` replaces the whole index with the rows given (a shard's rows with their
text), so deletes and overwrites are whatever the rows say. Search is BM25 over identifier-aware tokens: lowercase
words (English stop words left out), plus every identifier joined by ``- . _ / :`` kept whole ("F-2307" -> "2307",
"f-2307"; "min.cleanable.dirty.ratio" -> the whole and its four words), so an exact code outranks its parts.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
from bm25s.stopwords import STOPWORDS_EN_PLUS

from mmrag.vector_index import NO_FILTER, Hit, SearchFilter, VectorRow

STOPWORDS = frozenset(STOPWORDS_EN_PLUS)

_IDENTIFIER = re.compile(r"\w+(?:[-._/:]\w+)*")
_WORD = re.compile(r"\w+")
_OVERFETCH = 4  # filters are applied after BM25 ranks: fetch more, up to this many times top_k, then all


def keyword_tokens(text: str) -> list[str]:
    """Lowercase words of two characters or more that are not English stop words (bm25s' list of 179: "how",
    "is", "what"... would match every document that has them, and in a small shard BM25 weighs them high), and each
    identifier of several words also whole."""
    tokens: list[str] = []
    for ident in _IDENTIFIER.findall(text.lower()):
        words = _WORD.findall(ident)
        tokens.extend(w for w in words if len(w) > 1 and w not in STOPWORDS)
        if len(words) > 1:
            tokens.append(ident)
    return tokens


class KeywordIndex:
    """BM25 over rows' text; rows without text (images without OCR words) are left out. Thread-safe: a rebuild
    swaps the index in one step, searches see the old or the new one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[VectorRow] = []
        self._bm25: object | None = None

    def rebuild(self, rows: Iterable[VectorRow]) -> int:
        """Indexes ``rows`` (payload only; vectors are dropped); returns how many have text."""
        import bm25s

        kept = [replace(r, vector=np.empty(0, dtype=np.float32)) for r in rows if r.text.strip()]
        tokens = [keyword_tokens(r.text) for r in kept]
        bm25 = None
        if kept:
            bm25 = bm25s.BM25()
            bm25.index(tokens, show_progress=False)
        with self._lock:
            self._rows, self._bm25 = kept, bm25
        return len(kept)

    def __len__(self) -> int:
        return len(self._rows)

    def search(self, query: str, top_k: int, where: SearchFilter = NO_FILTER) -> list[Hit]:
        """The best ``top_k`` rows by BM25 that ``where`` admits, best first; rows matching no query token are
        never returned (a score of 0 is no match)."""
        with self._lock:
            rows, bm25 = self._rows, self._bm25
        tokens = keyword_tokens(query)
        if bm25 is None or not tokens or top_k <= 0:
            return []
        # Every row's score at once (a sparse sum over the query's terms), then the best among the rows that match:
        # bm25s' own retrieve selects over all rows, 10x the cost of scoring here.
        scores = bm25.get_scores(tokens)  # type: ignore[attr-defined]
        matching = np.flatnonzero(scores > 0)
        k = min(len(matching), top_k)
        while True:
            hits = self._best(rows, scores, matching, k)
            admitted = [h for h in hits if where.admits(h.row)]
            if len(admitted) >= top_k or k == len(matching):
                return admitted[:top_k]
            k = len(matching) if k >= top_k * _OVERFETCH else min(len(matching), k * 2)

    @staticmethod
    def _best(rows: Sequence[VectorRow], scores: np.ndarray, matching: np.ndarray, k: int) -> list[Hit]:
        """The ``k`` best of the ``matching`` rows, best first (ties by vector id)."""
        if k < len(matching):
            matching = matching[np.argpartition(-scores[matching], k - 1)[:k]]
        hits = [Hit(rows[int(i)], float(scores[i])) for i in matching]
        return sorted(hits, key=lambda h: (-h.score, h.row.vector_id))
