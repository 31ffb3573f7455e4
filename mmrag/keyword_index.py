"""A keyword (BM25) index over the chunk text of one shard, beside its vector index: exact identifiers, error codes
and rare words that a dense model misses, and the answers when the vector store is down.

Rows go in and out one by one (``apply``: a Faiss shard applies each batch of vectors.v1 here before its vector
index, so both lists change together) or all at once (``rebuild``: the rows a store returned). Scores are BM25 as
Lucene (and bm25s, which this replaced) computes them, from the statistics of the rows held now: a row's change
counts at once, never at the next rebuild. Tokens are identifier-aware: lowercase words (English stop words left
out), plus every identifier joined by ``- . _ / :`` kept whole ("F-2307" -> "2307", "f-2307";
"min.cleanable.dirty.ratio" -> the whole and its four words), so an exact code outranks its parts.
"""

from __future__ import annotations

import enum
import math
import re
import threading
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Protocol, runtime_checkable

import numpy as np
from bm25s.stopwords import STOPWORDS_EN_PLUS

from mmrag.vector_index import NO_FILTER, Hit, ReaderSets, SearchFilter, VectorRow

STOPWORDS = frozenset(STOPWORDS_EN_PLUS)
K1 = 1.5  # bm25s' defaults (Lucene's k1 is 1.2); Milvus' BM25 index is made with the same
B = 0.75

_IDENTIFIER = re.compile(r"\w+(?:[-._/:]\w+)*")
_WORD = re.compile(r"\w+")
_SEPARATOR = re.compile(r"[-./:]")
_OVERFETCH = 4  # filters are applied after BM25 ranks: fetch more, up to this many times top_k, then all
_MIN_COMPACT = 1024  # dead slots kept before their postings are dropped (when they also outnumber the live rows)


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


def analyzer_text(text: str) -> str:
    """``keyword_tokens(text)`` as one string that a Unicode word tokenizer (Milvus' "standard" analyzer) splits
    into the same tokens: each identifier's separators become "_", which joins words in Unicode word segmentation
    ("f-2307" -> "f_2307"), and the tokens are joined by spaces. Empty when the text has no token."""
    return " ".join(_SEPARATOR.sub("_", t) for t in keyword_tokens(text))


class KeywordSupport(enum.Enum):
    """How an index answers keyword searches itself (``KeywordSearcher``)."""

    NONE = "none"  # it cannot (a Milvus collection made before its BM25 field): a side index rebuilt from its rows
    STORE = "store"  # its store does (Milvus BM25), as current as the vectors; a side index answers while it is down
    IN_PROCESS = "in-process"  # kept with the vectors in this process (a Faiss shard): never unreachable


@runtime_checkable
class KeywordSearcher(Protocol):
    """An index that searches the keyword tokens of its rows' text itself, with its vector changes."""

    def keyword_support(self) -> KeywordSupport: ...

    def keyword_search(
        self, text: str, top_k: int, shard: int | None = None, where: SearchFilter = NO_FILTER
    ) -> list[Hit]:
        """The best ``top_k`` rows by BM25 over ``text``'s tokens within ``where``, best first (score: relevance);
        [] for a text without tokens. Raises RetryableError when the store cannot be reached."""
        ...


class _Postings:
    """The slots (rows) holding one token and how often each holds it; slots of removed rows stay until a
    compaction and score 0."""

    __slots__ = ("counts", "slots")

    def __init__(self) -> None:
        self.slots = array("i")
        self.counts = array("f")


class _Bm25:
    """The statistics and postings of the rows held; a writer changes it under the index's lock."""

    def __init__(self) -> None:
        self.rows: list[VectorRow | None] = []  # by slot; None once removed
        self.slot_of: dict[str, int] = {}  # vector id -> slot
        self.lengths = np.zeros(1024, dtype=np.float32)  # tokens per slot
        self.alive = np.zeros(1024, dtype=bool)
        self.acl = np.zeros(1024, dtype=np.int32)  # the row's reader set (its number in ``readers``)
        self.readers = ReaderSets()
        self.vocab: dict[str, int] = {}
        self.postings: list[_Postings] = []
        self.df: list[int] = []  # live rows holding each token
        self.live = 0
        self.total_length = 0.0

    @property
    def dead(self) -> int:
        return len(self.rows) - self.live

    def add(self, row: VectorRow) -> None:
        counts = Counter(keyword_tokens(row.text))
        slot = len(self.rows)
        if slot == len(self.alive):
            self.lengths = np.concatenate([self.lengths, np.zeros_like(self.lengths)])
            self.alive = np.concatenate([self.alive, np.zeros_like(self.alive)])
            self.acl = np.concatenate([self.acl, np.zeros_like(self.acl)])
        self.rows.append(row)
        self.slot_of[row.vector_id] = slot
        length = sum(counts.values())
        self.lengths[slot], self.alive[slot] = length, True
        self.acl[slot] = self.readers.number(row.readers)
        self.live += 1
        self.total_length += length
        for token, n in counts.items():
            term = self.vocab.setdefault(token, len(self.postings))
            if term == len(self.postings):
                self.postings.append(_Postings())
                self.df.append(0)
            self.postings[term].slots.append(slot)
            self.postings[term].counts.append(n)
            self.df[term] += 1

    def visible(self, tokens: frozenset[str]) -> np.ndarray:
        """Per slot: may a caller with these reader tokens see its row."""
        n = len(self.rows)
        if not self.readers.sets:
            return np.zeros(n, dtype=bool)
        return self.readers.visible(tokens)[self.acl[:n]]

    def remove(self, vector_id: str) -> None:
        slot = self.slot_of.pop(vector_id, None)
        if slot is None:
            return
        row = self.rows[slot]
        assert row is not None
        for token in set(keyword_tokens(row.text)):  # tokenized again rather than kept: memory over a little CPU
            self.df[self.vocab[token]] -= 1
        self.rows[slot] = None
        self.alive[slot] = False
        self.live -= 1
        self.total_length -= float(self.lengths[slot])

    def scores(self, tokens: Sequence[str]) -> np.ndarray:
        """Every slot's BM25 score for ``tokens`` (a token given twice counts twice, as in bm25s); 0 = no match."""
        n = len(self.rows)
        scores = np.zeros(n, dtype=np.float32)
        if not self.live or not self.total_length:
            return scores
        norm = K1 * (1 - B + B * self.lengths[:n] / (self.total_length / self.live))
        for token in tokens:
            term = self.vocab.get(token)
            if term is None or not self.df[term]:
                continue
            df = self.df[term]
            idf = math.log(1 + (self.live - df + 0.5) / (df + 0.5))
            slots = np.array(self.postings[term].slots, dtype=np.int32)  # a copy: the array may grow meanwhile
            tf = np.array(self.postings[term].counts, dtype=np.float32)
            scores[slots] += idf * tf / (tf + norm[slots])
        scores[~self.alive[:n]] = 0
        return scores


class KeywordIndex:
    """BM25 over rows' text; rows without text (images without OCR words) are left out. Thread-safe: one writer at
    a time, and a search sees every change of an ``apply`` or ``rebuild`` or none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the state, for searches and changes
        self._writing = threading.Lock()  # one writer at a time: a compaction reads the state without ``_lock``
        self._state = _Bm25()

    def rebuild(self, rows: Iterable[VectorRow]) -> int:
        """Replaces the whole index with ``rows`` (payload only; vectors are dropped); returns how many have text."""
        with self._writing:
            state = _built(rows)
            with self._lock:
                self._state = state
            return state.live

    def apply(self, upserts: Sequence[VectorRow] = (), deletes: Sequence[str] = ()) -> None:
        """Removes the rows of ``deletes`` (vector ids; unknown ones are fine), then puts ``upserts`` in, each in
        place of the row with its vector id (one without text only removes it)."""
        with self._writing:
            with self._lock:
                state = self._state
                for vid in [*deletes, *(r.vector_id for r in upserts)]:
                    state.remove(vid)
                for row in upserts:
                    if row.text.strip():
                        state.add(replace(row, vector=np.empty(0, dtype=np.float32)))
            if state.dead > max(_MIN_COMPACT, state.live):  # the postings are mostly removed rows: start anew
                compacted = _built(r for r in state.rows if r is not None)
                with self._lock:
                    self._state = compacted

    def __len__(self) -> int:
        return self._state.live

    def search(self, query: str, top_k: int, where: SearchFilter = NO_FILTER) -> list[Hit]:
        """The best ``top_k`` rows by BM25 that ``where`` admits, best first; rows matching no query token are
        never returned (a score of 0 is no match)."""
        tokens = keyword_tokens(query)
        if not tokens or top_k <= 0:
            return []
        with self._lock:  # the whole selection: a search sees a change (an overwrite's removal and add) or not
            rows, scores = self._state.rows, self._state.scores(tokens)
            matching = np.flatnonzero(scores > 0)
            if where.readers is not None:  # the caller's rows only, before the top k is chosen
                matching = matching[self._state.visible(where.readers)[matching]]
            k = min(len(matching), top_k)
            while True:
                hits = self._best(rows, scores, matching, k)
                admitted = [h for h in hits if where.admits(h.row)]
                if len(admitted) >= top_k or k == len(matching):
                    return admitted[:top_k]
                k = len(matching) if k >= top_k * _OVERFETCH else min(len(matching), k * 2)

    @staticmethod
    def _best(rows: Sequence[VectorRow | None], scores: np.ndarray, matching: np.ndarray, k: int) -> list[Hit]:
        """The ``k`` best of the ``matching`` rows, best first (ties by vector id)."""
        if k < len(matching):
            matching = matching[np.argpartition(-scores[matching], k - 1)[:k]]
        hits = [Hit(row, float(scores[i])) for i in matching if (row := rows[int(i)]) is not None]
        return sorted(hits, key=lambda h: (-h.score, h.row.vector_id))


def _built(rows: Iterable[VectorRow]) -> _Bm25:
    state = _Bm25()
    for row in rows:
        if row.text.strip():
            state.remove(row.vector_id)  # the last row of a vector id wins
            state.add(replace(row, vector=np.empty(0, dtype=np.float32)))
    return state
