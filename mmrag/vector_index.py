"""The VectorIndex port: upsert/delete by vector_id, read an object's rows, search one shard."""

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


class VectorIndex(Protocol):
    """Idempotent by vector_id: applying the same upsert or delete twice leaves the same index."""

    def start(self) -> None: ...

    def upsert(self, rows: Sequence[VectorRow]) -> None: ...

    def delete(self, vector_ids: Sequence[str]) -> None: ...

    def rows_of(self, object_id: str) -> list[VectorRow]: ...

    def search(self, query: np.ndarray, top_k: int, shard: int | None = None) -> list[Hit]: ...
