"""vectors.v1, the Faiss path's log of index rows: key = vector_id, partition = shard, compacted, a delete is a
tombstone (header ``object-id``). The index updater writes it as outputs of its batches (flushed before its offsets
commit, like its other effects); Faiss retrieval workers materialize one partition each.

``VectorLogTable`` is the updater's writer when Faiss is its only backend: the rows of the objects whose
embeddings.v1 partitions it owns, restored from vectors.v1 on assignment, changed by each batch and undone when a
batch's outputs were dropped, so ``rows_of`` answers what vectors.v1 holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from mmrag.changelog import LoggedRecord
from mmrag.kafka_clients import key_partition
from mmrag.messages import Output
from mmrag.pb.events_pb2 import VectorRecord
from mmrag.vector_index import VectorRow

log = logging.getLogger(__name__)

OBJECT_ID_HEADER = "object-id"


def to_record(row: VectorRow, space_id: str) -> VectorRecord:
    return VectorRecord(
        vector_id=row.vector_id,
        object_id=row.object_id,
        version=row.version,
        chunk_index=row.chunk_index,
        shard=row.shard,
        space_id=space_id,
        vector=np.asarray(row.vector, dtype=np.float32).tolist(),
        text=row.text,
        char_start=row.char_start,
        char_end=row.char_end,
        page=row.page,
        event_time_ms=row.event_time_ms,
        indexed_at_ms=row.indexed_at_ms,
        has_text=row.has_text,
        has_image=row.has_image,
        content_type=row.content_type,
        readers=row.readers,
    )


def from_record(record: VectorRecord) -> VectorRow:
    return VectorRow(
        vector_id=record.vector_id,
        object_id=record.object_id,
        version=record.version,
        chunk_index=record.chunk_index,
        shard=record.shard,
        vector=np.asarray(record.vector, dtype=np.float32),
        text=record.text,
        char_start=record.char_start,
        char_end=record.char_end,
        page=record.page,
        has_text=record.has_text,
        has_image=record.has_image,
        event_time_ms=record.event_time_ms,
        indexed_at_ms=record.indexed_at_ms,
        content_type=record.content_type,
        readers=tuple(record.readers),
    )


def vector_outputs(
    topic: str, upserts: Sequence[VectorRow], deletes: Sequence[str], object_id: str, shard: int, space_id: str
) -> list[Output]:
    """The vectors.v1 records of one object's change: its rows, then tombstones of its dropped vector ids (every row
    of an object lives on the object's shard)."""
    headers = {OBJECT_ID_HEADER: object_id}
    outputs = [Output(topic, r.vector_id, to_record(r, space_id), headers, partition=r.shard) for r in upserts]
    outputs += [Output(topic, vid, None, headers, partition=shard) for vid in deletes]
    return outputs


def decode_record(value: bytes) -> VectorRecord:
    record = VectorRecord()
    record.ParseFromString(value)
    return record


class VectorLogTable:
    """IndexWriter over vectors.v1 for the objects of the updater's assigned embeddings.v1 partitions."""

    def __init__(
        self,
        read_log: Callable[[], Iterable[LoggedRecord]],
        embedding_partitions: Callable[[], int],
        space_id: str,
    ) -> None:
        self._read_log = read_log
        self._embedding_partitions = embedding_partitions
        self.space_id = space_id
        self._rows: dict[str, VectorRow] = {}
        self._by_object: dict[str, set[str]] = {}
        self._undo: list[tuple[str, VectorRow | None]] = []

    def start(self) -> None:
        """Nothing to connect; the table is filled by ``restore``."""

    def restore(self, partitions: Iterable[int]) -> None:
        """Rebuilds the table from every vectors.v1 partition, keeping the objects of ``partitions`` of
        embeddings.v1 (an object's embeddings and its updater live on its key's partition there)."""
        mine, count = set(partitions), self._embedding_partitions()
        self._rows, self._by_object, self._undo = {}, {}, []
        for record in self._read_log():
            if record.key is None:
                continue
            if record.value is None:
                self._drop(record.key)
                continue
            decoded = decode_record(record.value)
            if decoded.space_id == self.space_id and key_partition(decoded.object_id, count) in mine:
                self._put(from_record(decoded))
        self._undo.clear()
        log.info("vector log: restored %d rows of %d objects", len(self._rows), len(self._by_object))

    def upsert(self, rows: Sequence[VectorRow]) -> None:
        for row in rows:
            self._put(row)

    def delete(self, vector_ids: Sequence[str]) -> None:
        for vid in vector_ids:
            self._drop(vid)

    def rows_of(self, object_id: str) -> list[VectorRow]:
        return [self._rows[v] for v in sorted(self._by_object.get(object_id, ()))]

    def commit(self) -> None:
        """The batch's vectors.v1 records are durable: its changes stay."""
        self._undo.clear()

    def abort(self) -> None:
        """The batch's records were dropped: its changes are undone, newest first."""
        undo, self._undo = self._undo, []
        for vid, before in reversed(undo):
            self._drop(vid)
            if before is not None:
                self._put(before)
        self._undo.clear()

    def _put(self, row: VectorRow) -> None:
        self._undo.append((row.vector_id, self._rows.get(row.vector_id)))
        old = self._rows.get(row.vector_id)
        if old is not None and old.object_id != row.object_id:
            self._by_object[old.object_id].discard(row.vector_id)
        self._rows[row.vector_id] = row
        self._by_object.setdefault(row.object_id, set()).add(row.vector_id)

    def _drop(self, vector_id: str) -> None:
        row = self._rows.pop(vector_id, None)
        if row is None:
            return
        self._undo.append((vector_id, row))
        siblings = self._by_object[row.object_id]
        siblings.discard(vector_id)
        if not siblings:
            del self._by_object[row.object_id]
