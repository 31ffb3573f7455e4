"""The query service's caches, in process: query embeddings (LRU) and search results (TTL).

- Embeddings: the MiniLM and CLIP-text vectors of a query text and the CLIP vector of a query image, keyed by a
  sha256 of the text or the image bytes (never the bytes themselves). Encoding is the costly step of a repeated query.
- Results: a complete answer (every shard answered) keyed by the query vector, top_k, scope and fusion, with the
  count of index changes seen when its search began. A fresh one (``MMRAG_RESULT_CACHE_TTL_S``, and no index change
  seen since: any upsert or delete may change any result) answers the same query again at once; when retrieval
  times out, the last complete answer not older than ``MMRAG_RESULT_CACHE_STALE_S`` is given instead of a partial
  one. Both are flagged ``from_cache``. Only complete answers are kept, so a cache never serves a partial answer as
  whole.
Hits, misses and stale answers are counted in ``mmrag_cache_requests_total{cache, outcome}``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import numpy as np
from prometheus_client import Counter

from query_service.filters import Scope
from query_service.types import SearchOutcome

CACHE_REQUESTS = Counter("mmrag_cache_requests_total", "Cache lookups by outcome", ["cache", "outcome"])
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(Generic[K, V]):
    """A thread-safe least-recently-used map of at most ``size`` entries (0 = caches nothing)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def digest(*parts: bytes) -> str:
    """sha256 over length-prefixed parts: no two part lists share a digest."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


class EmbeddingCache:
    """Query vectors by content hash: ``text(text, encode)`` and ``image(data, encode)`` return the cached value or
    compute it with ``encode`` once and keep it."""

    def __init__(self, size: int) -> None:
        self._lru: Lru[str, tuple[np.ndarray, ...]] = Lru(size)

    def text(self, text: str, encode: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
        return self._get(digest(b"text", text.encode()), encode)

    def image(self, data: bytes, encode: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
        return self._get(digest(b"image", data), encode)

    def sentences(
        self, sentences: Sequence[str], encode: Callable[[list[str]], np.ndarray], model: bytes = b"clip"
    ) -> np.ndarray:
        """Vectors of ``sentences`` (n, dim) by ``model`` in order; the ones not kept are encoded in one ``encode``
        call."""
        keys = [digest(b"sentence", model, s.encode()) for s in sentences]
        found = {k: v for k in keys if (v := self._lru.get(k)) is not None}
        missing = {k: s for k, s in zip(keys, sentences, strict=True) if k not in found}
        CACHE_REQUESTS.labels("embedding", "hit").inc(len(keys) - len(missing))
        CACHE_REQUESTS.labels("embedding", "miss").inc(len(missing))
        if missing:
            for k, v in zip(missing, encode(list(missing.values())), strict=True):
                found[k] = (v,)
                self._lru.put(k, found[k])
        return np.stack([found[k][0] for k in keys])

    def _get(self, key: str, encode: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
        found = self._lru.get(key)
        CACHE_REQUESTS.labels("embedding", "miss" if found is None else "hit").inc()
        if found is None:
            found = encode()
            self._lru.put(key, found)
        return found


@dataclass(frozen=True)
class _Stored:
    outcome: SearchOutcome
    at: float
    changes: int  # index changes seen when its search began


class ResultCache:
    """Complete search answers by query; ``clock`` is monotonic seconds (tests pass their own)."""

    def __init__(
        self,
        ttl_s: float,
        stale_s: float,
        size: int,
        clock: Callable[[], float] = time.monotonic,
        changes: Callable[[], int] = lambda: 0,
    ) -> None:
        """``changes``: the count of index changes seen so far (IndexedObjects.changes, fed by index-status.v1
        before GetObjectStatus shows a status), so nothing computed before a change is served after its status."""
        self.changes = changes
        self.ttl_s = ttl_s
        self.stale_s = max(stale_s, ttl_s)
        self.clock = clock
        self._lru: Lru[str, _Stored] = Lru(size)

    @staticmethod
    def key(vector: np.ndarray, top_k: int, scope: Scope, fusion: str) -> str:
        return digest(np.asarray(vector, dtype=np.float32).tobytes(), repr((top_k, scope, fusion)).encode())

    def fresh(self, key: str) -> SearchOutcome | None:
        """The answer stored for ``key`` within the TTL, flagged ``from_cache`` (a hit), else None (a miss)."""
        found = self._aged(key, self.ttl_s, current=True)
        CACHE_REQUESTS.labels("result", "miss" if found is None else "hit").inc()
        return found

    def stale(self, key: str) -> SearchOutcome | None:
        """For a timed-out retrieval: the answer stored within the stale window, flagged ``from_cache``."""
        found = self._aged(key, self.stale_s)
        if found is not None:
            CACHE_REQUESTS.labels("result", "stale").inc()
        return found

    def put(self, key: str, outcome: SearchOutcome, changes_at_start: int) -> None:
        """Keeps a complete ``outcome`` of a search that began when ``changes_at_start`` changes had been seen."""
        if not outcome.partial and not outcome.errors:
            self._lru.put(key, _Stored(outcome, self.clock(), changes_at_start))

    def _aged(self, key: str, max_age_s: float, current: bool = False) -> SearchOutcome | None:
        stored = self._lru.get(key)
        if stored is None or max_age_s <= 0 or self.clock() - stored.at > max_age_s:
            return None
        if current and stored.changes != self.changes():
            return None  # the index changed since its search began
        return replace(stored.outcome, from_cache=True)
