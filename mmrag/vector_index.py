"""The vector index ports, split by who uses them (Haystack's DocumentStore protocol style).

The index updater writes (``IndexWriter``: upsert, delete, rows of an object); retrieval workers search one shard
(``IndexSearcher``: top-k with filters, count). Every backend implements both (``VectorIndex``): Milvus
(`mmrag.milvus_index`) and Faiss (`mmrag.faiss_index`); `tests/test_index_contract.py` runs one contract on each.
Both sides are idempotent by vector_id: the same upsert or delete applied twice leaves the same index.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class VectorRow:
    """One indexed vector with the payload needed to cite it."""

    vector_id: str
    object_id: str
    version: str
    chunk_index: int
    shard: int
    vector: np.ndarray
    text: str = ""
    char_start: int = 0
    char_end: int = 0
    page: int = 0
    has_text: bool = False
    has_image: bool = False
    event_time_ms: int = 0
    indexed_at_ms: int = 0
    content_type: str = ""  # the object's media type (``media_type``), "" when indexed before it was kept
    readers: tuple[str, ...] = ()  # the object's reader tokens, sorted (``user:alice``, ``group:finance``)


@dataclass(frozen=True)
class Hit:
    row: VectorRow
    score: float


def media_type(content_type: str) -> str:
    """``text/plain; charset=utf-8`` -> ``text/plain``: what rows keep and content-type filters compare."""
    return content_type.split(";", 1)[0].strip().lower()


def bucket_and_key(object_id: str) -> tuple[str, str]:
    bucket, _, key = object_id.partition("/")
    return bucket, key


@dataclass(frozen=True)
class SearchFilter:
    """Which rows a search may return, besides its shard; every condition given must hold (None = no condition).
    ``object_ids`` are matched exactly (any S3 key: quotes, backslashes, tabs, non-ASCII); ``has_text``/``has_image``
    select by the halves a row has; ``buckets`` and ``key_prefix`` by the object id's bucket and key (the prefix
    within any bucket when no bucket is named); ``content_types`` by media type (``media_type``); the event-time
    range is [from, to) in epoch ms."""

    object_ids: frozenset[str] | None = None
    has_text: bool | None = None
    has_image: bool | None = None
    buckets: frozenset[str] | None = None
    key_prefix: str = ""
    content_types: frozenset[str] | None = None
    event_time_from_ms: int | None = None
    event_time_to_ms: int | None = None
    readers: frozenset[str] | None = None  # the caller's reader tokens: rows sharing one; None = every row

    def admits(self, row: VectorRow) -> bool:
        """The filter as a predicate (what every backend must agree with)."""
        return (
            self.admits_readers(row.readers)
            and (self.object_ids is None or row.object_id in self.object_ids)
            and (self.has_text is None or row.has_text == self.has_text)
            and (self.has_image is None or row.has_image == self.has_image)
            and self.admits_payload(row)
        )

    def admits_payload(self, row: VectorRow) -> bool:
        """The conditions on a row's payload alone: bucket, key prefix, content type, event time."""
        return (
            self.admits_object(row.object_id)
            and (self.content_types is None or row.content_type in self.content_types)
            and (self.event_time_from_ms is None or row.event_time_ms >= self.event_time_from_ms)
            and (self.event_time_to_ms is None or row.event_time_ms < self.event_time_to_ms)
        )

    def admits_readers(self, readers: Iterable[str]) -> bool:
        """The caller may see a row with these readers: no reader condition, or a token in common."""
        return self.readers is None or not self.readers.isdisjoint(readers)

    def admits_object(self, object_id: str) -> bool:
        """The bucket and key-prefix conditions alone."""
        bucket, key = bucket_and_key(object_id)
        return (self.buckets is None or bucket in self.buckets) and key.startswith(self.key_prefix)

    @property
    def matches_nothing(self) -> bool:
        """True when an empty set is given (no object id, bucket, content type or reader token can match)."""
        return any(v is not None and not v for v in (self.object_ids, self.buckets, self.content_types, self.readers))

    @property
    def on_payload(self) -> bool:
        """True when it has a condition on the payload (bucket, key prefix, content type, event time)."""
        return (
            self.buckets is not None
            or bool(self.key_prefix)
            or self.content_types is not None
            or self.event_time_from_ms is not None
            or self.event_time_to_ms is not None
        )


NO_FILTER = SearchFilter()


class ReaderSets:
    """The distinct reader sets of the rows, numbered: a row keeps its set's number, and a caller's visible rows are
    those whose number is in the caller's visible sets (one numpy lookup per row instead of a set test per row;
    objects share few distinct sets)."""

    def __init__(self) -> None:
        self.numbers: dict[tuple[str, ...], int] = {}
        self.sets: list[frozenset[str]] = []

    def number(self, readers: tuple[str, ...]) -> int:
        found = self.numbers.get(readers)
        if found is None:
            found = self.numbers[readers] = len(self.sets)
            self.sets.append(frozenset(readers))
        return found

    def visible(self, tokens: frozenset[str]) -> np.ndarray:
        """Per set number: does ``tokens`` share a token with it."""
        return np.fromiter((not tokens.isdisjoint(s) for s in self.sets), dtype=bool, count=len(self.sets))


def reader_tokens(text: str) -> tuple[str, ...]:
    """Reader tokens as an object tag or a setting spells them (space- or comma-separated ``user:<principal>`` /
    ``group:<name>``), sorted and once each; raises ValueError naming a token of another form."""
    tokens = sorted({t for t in text.replace(",", " ").split() if t})
    for token in tokens:
        kind, _, name = token.partition(":")
        if kind not in ("user", "group") or not name:
            raise ValueError(f"reader token {token!r} is neither user:<principal> nor group:<name>")
    return tuple(tokens)


class IndexWriter(Protocol):
    """The index updater's side. Upserting an existing vector_id overwrites it; deleting a missing one is a no-op."""

    def start(self) -> None: ...

    def upsert(self, rows: Sequence[VectorRow]) -> None: ...

    def delete(self, vector_ids: Sequence[str]) -> None: ...

    def rows_of(self, object_id: str) -> list[VectorRow]: ...


class IndexSearcher(Protocol):
    """A retrieval worker's side: top-k by inner product within one shard (None = all), best first."""

    def start(self) -> None: ...

    def search(
        self, query: np.ndarray, top_k: int, shard: int | None = None, where: SearchFilter = NO_FILTER
    ) -> list[Hit]: ...

    def count(self) -> int: ...

    def shard_rows(self, shard: int) -> Iterator[VectorRow]:
        """Every row of ``shard`` with its payload (vectors may be left empty): what a keyword index is built from."""
        ...

    def rows_version(self) -> int | None:
        """A number that changes whenever a row changes (a keyword index built at one version is current while it
        stays); None when the backend cannot tell cheaply (every refresh rebuilds)."""
        ...


class VectorIndex(IndexWriter, IndexSearcher, Protocol):
    """A backend: both sides over one store."""
