"""Object reads of a poll batch kept in flight up to a byte budget, and objects refused by size before any read.

The sizes come from the events, so a batch of large objects is never all in memory at once: reads are queued in
order while the bytes read and not yet released stay within the budget (always at least one read, so an object
larger than the budget still gets through alone). A consumer releases each object once it has extracted or decoded
it, which queues the next reads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future

from mmrag.errors import PermanentError
from mmrag.object_store import ObjectStore
from mmrag.pb.events_pb2 import MediaKind, ObjectEvent


def size_refusal(event: ObjectEvent, limit: int, stage: str, setting: str) -> PermanentError | None:
    """The error for an object whose event says it is over ``limit`` bytes (``setting`` names the knob), else None:
    decided from the event, so not one byte of it is read."""
    if event.size <= limit:
        return None
    kind = MediaKind.Name(event.media_kind).removeprefix("MEDIA_KIND_").lower()
    return PermanentError(
        stage,
        event.object_id,
        f"{event.size} bytes is over the {kind} limit of {limit} bytes; not read",
        f"split the object or raise {setting}",
    )


class ReadAhead:
    """``result(i)`` is the bytes of the i-th object; ``release(i)`` once they are no longer needed."""

    def __init__(self, pool: Executor, read: Callable[[int], bytes], sizes: Sequence[int], budget_bytes: int) -> None:
        self._pool = pool
        self._read = read
        self._sizes = [max(0, s) for s in sizes]
        self._budget = budget_bytes
        self._reads: dict[int, Future[bytes]] = {}
        self._next = 0
        self._held = 0
        self._lock = threading.Lock()
        with self._lock:
            self._fill()

    @property
    def held_bytes(self) -> int:
        """Bytes of the reads queued or done and not yet released (by the events' sizes)."""
        return self._held

    def result(self, i: int) -> bytes:
        """The i-th object's bytes (queues its read first when the budget had held it back); raises what the read
        raised."""
        with self._lock:
            while self._next <= i:  # wanted now: queued past the budget, which the releases then pay back
                self._submit()
            read = self._reads[i]
        return read.result()

    def release(self, i: int) -> None:
        """Forgets the i-th object's bytes and queues the reads the freed budget allows; idempotent."""
        with self._lock:
            if self._reads.pop(i, None) is not None:
                self._held -= self._sizes[i]
            self._fill()

    def _fill(self) -> None:
        while self._next < len(self._sizes) and (
            self._held == 0 or self._held + self._sizes[self._next] <= self._budget
        ):
            self._submit()

    def _submit(self) -> None:
        i = self._next
        self._reads[i] = self._pool.submit(self._read, i)
        self._held += self._sizes[i]
        self._next += 1


def object_reads(pool: Executor, store: ObjectStore, events: Sequence[ObjectEvent], budget_bytes: int) -> ReadAhead:
    """The events' objects (the versions they name), read ahead in order within ``budget_bytes``."""
    return ReadAhead(
        pool,
        lambda n: store.get(events[n].bucket, events[n].key, events[n].version_id),
        [event.size for event in events],
        budget_bytes,
    )
