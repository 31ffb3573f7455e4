"""Per-object fusion: arrivals in either order complete one record; versions only move forward."""

from __future__ import annotations

import numpy as np
import pytest

from index_updater.fusion import plan_update
from mmrag.ids import shard_for, vector_id
from mmrag.pb.events_pb2 import Chunk, EmbeddingBatch, IndexState, Modality
from mmrag.space import EmbeddingSpace
from mmrag.vector_index import VectorRow

pytestmark = pytest.mark.unit

SPACE = EmbeddingSpace("text@1", 4, "clip@1", 3, 0.5, 0.5)
OID = "b/doc.png"


def text_batch(version: str = "v1", t: int = 100, chunks: int = 2) -> EmbeddingBatch:
    batch = EmbeddingBatch(object_id=OID, version=version, modality=Modality.MODALITY_TEXT, event_time_ms=t)
    for i in range(chunks):
        vec = np.zeros(4)
        vec[i] = 1.0
        batch.chunks.append(
            Chunk(index=i, text=f"chunk {i}", char_start=i * 10, char_end=i * 10 + 7, vector=vec.tolist())
        )
    return batch


def image_batch(version: str = "v1", t: int = 100) -> EmbeddingBatch:
    batch = EmbeddingBatch(object_id=OID, version=version, modality=Modality.MODALITY_IMAGE, event_time_ms=t)
    batch.chunks.append(Chunk(index=0, vector=[0.0, 0.0, 2.0]))
    return batch


def apply(rows: dict[str, VectorRow], batch: EmbeddingBatch) -> IndexState:
    plan = plan_update(batch, list(rows.values()), SPACE, shards=3, now_ms=999)
    for vid in plan.deletes:
        rows.pop(vid)
    rows.update({r.vector_id: r for r in plan.upserts})
    return plan.status.state


@pytest.mark.parametrize("order", ["text-first", "image-first"])
def test_text_and_image_arrivals_fuse_into_the_same_rows(order: str) -> None:
    rows: dict[str, VectorRow] = {}
    arrivals = [text_batch(), image_batch()] if order == "text-first" else [image_batch(), text_batch()]
    for batch in arrivals:
        assert apply(rows, batch) == IndexState.INDEX_STATE_INDEXED
    expected_ids = {vector_id(OID, "v1", f"chunk-{i}", SPACE.id) for i in range(2)}
    assert set(rows) == expected_ids
    for row in rows.values():
        assert row.has_text and row.has_image and row.shard == shard_for(OID, 3)
        np.testing.assert_allclose(row.vector[4:], [0, 0, 0.5], atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(row.vector[:4]), 0.5, atol=1e-6)
    assert {r.text for r in rows.values()} == {"chunk 0", "chunk 1"}


@pytest.mark.parametrize("fill", [False, True])
def test_clip_text_vectors_fill_the_clip_half_only_when_the_space_says_so(fill: bool) -> None:
    space = EmbeddingSpace("text@1", 4, "clip@1", 3, 0.8, 0.6, clip_text_for_text=fill)
    batch = text_batch(chunks=1)
    batch.chunks[0].clip_text_vector.extend([3.0, 4.0, 0.0])
    [row] = plan_update(batch, [], space, shards=1, now_ms=1).upserts
    expected = [0.36, 0.48, 0.0] if fill else [0.0, 0.0, 0.0]
    np.testing.assert_allclose(row.vector[4:], expected, atol=1e-6)
    assert not row.has_image
    assert (space.id != EmbeddingSpace("text@1", 4, "clip@1", 3, 0.8, 0.6).id) == fill  # the switch is in the id


def test_redelivery_is_harmless() -> None:
    rows: dict[str, VectorRow] = {}
    apply(rows, text_batch())
    snapshot = {k: v.vector.copy() for k, v in rows.items()}
    apply(rows, text_batch())
    assert set(rows) == set(snapshot)
    for k, v in rows.items():
        np.testing.assert_array_equal(v.vector, snapshot[k])


def test_new_version_replaces_old_rows_and_old_events_change_nothing() -> None:
    rows: dict[str, VectorRow] = {}
    apply(rows, text_batch("v1", t=100, chunks=3))
    apply(rows, text_batch("v2", t=200, chunks=1))
    assert set(rows) == {vector_id(OID, "v2", "chunk-0", SPACE.id)}
    assert apply(rows, text_batch("v1", t=100, chunks=3)) == IndexState.INDEX_STATE_SKIPPED
    assert set(rows) == {vector_id(OID, "v2", "chunk-0", SPACE.id)}


def test_delete_removes_everything_unless_older_than_the_index() -> None:
    rows: dict[str, VectorRow] = {}
    apply(rows, text_batch("v2", t=200))
    stale_delete = EmbeddingBatch(object_id=OID, version="v1", deleted=True, event_time_ms=150)
    assert apply(rows, stale_delete) == IndexState.INDEX_STATE_SKIPPED and len(rows) == 2
    delete = EmbeddingBatch(object_id=OID, version="v2", deleted=True, event_time_ms=300)
    assert apply(rows, delete) == IndexState.INDEX_STATE_DELETED and rows == {}
