"""Per-object fusion: merge an arriving embedding batch with what the index holds for that object.

Text and image halves of an object arrive independently (text first, image later, or the other way round); each
arrival upserts complete rows at once, so the record completes itself. Versions only move forward: a batch older
than what is indexed changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from mmrag.errors import PermanentError
from mmrag.ids import shard_for, vector_id
from mmrag.pb.events_pb2 import EmbeddingBatch, IndexState, IndexStatus, Modality
from mmrag.space import EmbeddingSpace
from mmrag.vector_index import VectorRow, media_type


@dataclass(frozen=True)
class IndexPlan:
    upserts: list[VectorRow]
    deletes: list[str]
    status: IndexStatus


def plan_update(
    batch: EmbeddingBatch, existing: Sequence[VectorRow], space: EmbeddingSpace, shards: int, now_ms: int
) -> IndexPlan:
    """What to upsert and delete so the index reflects ``batch``; idempotent when applied twice."""
    newest = max((r.event_time_ms for r in existing), default=-1)
    status = IndexStatus(
        object_id=batch.object_id,
        version=batch.version,
        space_id=space.id,
        event_time_ms=batch.event_time_ms,
        indexed_at_ms=now_ms,
        modality=batch.modality,
    )
    if batch.readers_only:
        return _readers_plan(batch, existing, status)
    if batch.event_time_ms < newest and all(r.version != batch.version for r in existing):
        status.state = IndexState.INDEX_STATE_SKIPPED
        status.detail = "older than the indexed version; ignored"
        return IndexPlan([], [], status)
    if batch.deleted and batch.expired and (not existing or any(r.version != batch.version for r in existing)):
        status.state = IndexState.INDEX_STATE_SKIPPED  # deleted or replaced since the pruning job looked
        status.detail = "TTL expiry of a version no longer indexed; ignored"
        return IndexPlan([], [], status)
    if batch.deleted:
        status.state = IndexState.INDEX_STATE_EXPIRED if batch.expired else IndexState.INDEX_STATE_DELETED
        status.detail = "not updated within the TTL: deleted from the index by pruning" if batch.expired else ""
        return IndexPlan([], [r.vector_id for r in existing], status)
    same = [r for r in existing if r.version == batch.version]
    try:
        text = batch.modality == Modality.MODALITY_TEXT
        rows = _text_rows(batch, same, space) if text else _image_rows(batch, same, space)
    except ValueError as exc:  # a vector of the wrong size: made by another model than this space's
        raise PermanentError(
            "index_updater",
            f"{batch.object_id} (version {batch.version})",
            f"its embeddings do not fit space {space.id}: {exc}",
            "re-embed it with this space's models (mmrag dlq replay after fixing the embedder's model settings)",
        ) from exc
    rows = [_place(r, batch, space, shards, now_ms) for r in rows]
    keep = {r.vector_id for r in rows}
    status.state = IndexState.INDEX_STATE_INDEXED
    status.text_chunks = sum(1 for r in rows if r.has_text)
    status.image_vectors = 1 if any(r.has_image for r in rows) else 0
    status.readers[:] = readers_of(batch)
    return IndexPlan(rows, [r.vector_id for r in existing if r.vector_id not in keep], status)


def readers_of(batch: EmbeddingBatch) -> tuple[str, ...]:
    return tuple(sorted(set(batch.readers)))


def _readers_plan(batch: EmbeddingBatch, existing: Sequence[VectorRow], status: IndexStatus) -> IndexPlan:
    """The object's rows of that version again with the new readers (vectors, text and ids kept: nothing is
    embedded), and an ``indexed`` status naming them, so caches drop what they hold of the object."""
    readers = readers_of(batch)
    same = [r for r in existing if r.version == batch.version]
    if not same or all(r.readers == readers for r in same):
        status.state = IndexState.INDEX_STATE_SKIPPED
        status.detail = "readers unchanged, or no row of that version indexed; ignored"
        return IndexPlan([], [], status)
    rows = [replace(r, readers=readers) for r in same]
    status.state = IndexState.INDEX_STATE_INDEXED
    status.event_time_ms = rows[0].event_time_ms
    status.text_chunks = sum(1 for r in rows if r.has_text)
    status.image_vectors = 1 if any(r.has_image for r in rows) else 0
    status.readers[:] = readers
    status.detail = "readers changed"
    return IndexPlan(rows, [], status)


def _text_rows(batch: EmbeddingBatch, same: Sequence[VectorRow], space: EmbeddingSpace) -> list[VectorRow]:
    image = next((space.clip_half(r.vector) for r in same if r.has_image), None)
    rows = []
    for c in batch.chunks:
        text_clip = np.asarray(c.clip_text_vector) if c.clip_text_vector and space.clip_text_for_text else None
        clip = image if image is not None else text_clip
        rows.append(
            VectorRow(
                vector_id="",
                object_id=batch.object_id,
                version=batch.version,
                chunk_index=c.index,
                shard=0,
                vector=space.fuse(np.asarray(c.vector), clip),
                text=c.text,
                char_start=c.char_start,
                char_end=c.char_end,
                page=c.page,
                has_text=True,
                has_image=image is not None,
            )
        )
    return rows


def _image_rows(batch: EmbeddingBatch, same: Sequence[VectorRow], space: EmbeddingSpace) -> list[VectorRow]:
    image = np.asarray(batch.chunks[0].vector, dtype=np.float32)
    text_rows = [r for r in same if r.has_text]
    if not text_rows:
        return [
            VectorRow(
                vector_id="",
                object_id=batch.object_id,
                version=batch.version,
                chunk_index=0,
                shard=0,
                vector=space.fuse(None, image),
                has_image=True,
            )
        ]
    return [replace(r, vector=space.fuse(space.text_half(r.vector), image), has_image=True) for r in text_rows]


def _place(row: VectorRow, batch: EmbeddingBatch, space: EmbeddingSpace, shards: int, now_ms: int) -> VectorRow:
    """Gives a row its stable id, its shard and its times."""
    return replace(
        row,
        vector_id=vector_id(batch.object_id, batch.version, f"chunk-{row.chunk_index}", space.id),
        shard=shard_for(batch.object_id, shards),
        event_time_ms=batch.event_time_ms,
        indexed_at_ms=now_ms,
        content_type=media_type(batch.content_type),
        readers=readers_of(batch),
    )
