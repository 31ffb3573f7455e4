"""What the index holds now, per object, as index-status.v1 tells it (through the status view): the view every
freshness rule of the query side reads (the answer cache, the result cache, Search's stale keyword hits)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from mmrag.pb.events_pb2 import IndexState, IndexStatus


@dataclass(frozen=True)
class IndexedVersion:
    """An object's last index change: the version, when it was indexed and whether it is in the index."""

    version: str
    indexed_at_ms: int
    live: bool
    readers: tuple[str, ...] = ()  # who may read the rows (IndexStatus.readers)


class IndexedObjects:
    """Per object, its newest status that changed the index (history first, as the status view reads it)."""

    def __init__(self) -> None:
        self._latest: dict[str, IndexedVersion] = {}
        self._lock = threading.Lock()
        self.changes = 0  # index changes observed so far: a result computed at an older count may be stale

    def observe(self, status: IndexStatus) -> IndexedVersion | None:
        """The object's new state, or None when ``status`` changed nothing (SKIPPED, or older than the one kept)."""
        if status.state == IndexState.INDEX_STATE_SKIPPED:
            return None
        live = status.state == IndexState.INDEX_STATE_INDEXED
        state = IndexedVersion(status.version, status.indexed_at_ms, live, tuple(status.readers))
        with self._lock:
            kept = self._latest.get(status.object_id)
            if kept is not None and kept.indexed_at_ms > state.indexed_at_ms:
                return None
            self._latest[status.object_id] = state
            self.changes += 1
        return state

    def get(self, object_id: str) -> IndexedVersion | None:
        with self._lock:
            return self._latest.get(object_id)

    def superseded(self, object_id: str, version: str) -> bool:
        """Whether the index no longer holds this version of the object (overwritten or removed since)."""
        now = self.get(object_id)
        return now is not None and (not now.live or now.version != version)

    def hidden(self, object_id: str, tokens: frozenset[str]) -> bool:
        """Whether the newest status of the object names readers that share no token with ``tokens`` (objects
        it has not seen a status of are not judged here: the shards filtered them)."""
        now = self.get(object_id)
        return now is not None and tokens.isdisjoint(now.readers)
