"""The vector index ports, split by who uses them (Haystack's DocumentStore protocol style).

The index updater writes (``IndexWriter``: upsert, delete, rows of an object); retrieval workers search one shard
(``IndexSearcher``: top-k with filters, count). Every backend implements both (``VectorIndex``): Milvus
(`mmrag.milvus_index`) and Faiss (`mmrag.faiss_index`); `tests/test_index_contract.py` runs one contract on each.
Both sides are idempotent by vector_id: the same upsert or delete applied twice leaves the same index.
"""

from __future__ import annotations

from collections.abc import Sequence
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


@dataclass(frozen=True)
class Hit:
    row: VectorRow
    score: float


@dataclass(frozen=True)
class SearchFilter:
    """Which rows a search may return, besides its shard. None = no condition. ``object_ids`` are matched exactly
    (any S3 key: quotes, backslashes, tabs, non-ASCII); ``has_text``/``has_image`` select by the halves a row has."""

    object_ids: frozenset[str] | None = None
    has_text: bool | None = None
    has_image: bool | None = None

    def admits(self, row: VectorRow) -> bool:
        """The filter as a predicate (what every backend must agree with)."""
        return (
            (self.object_ids is None or row.object_id in self.object_ids)
            and (self.has_text is None or row.has_text == self.has_text)
            and (self.has_image is None or row.has_image == self.has_image)
        )


NO_FILTER = SearchFilter()


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


class VectorIndex(IndexWriter, IndexSearcher, Protocol):
    """A backend: both sides over one store."""
