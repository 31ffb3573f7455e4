"""SIGKILL of the text embedder between produce and commit: after restart every vector exists exactly once."""

from __future__ import annotations

import pytest

from mmrag.ids import vector_id
from mmrag.milvus_index import MilvusIndex
from mmrag.object_store import S3ObjectStore
from mmrag.pb.events_pb2 import EmbeddingBatch, IndexState, IndexStatus
from mmrag.settings import SpaceSettings, VectorStoreSettings
from mmrag.space import space_from_settings
from tests.kafka_tools import read_topic, wait_for

pytestmark = pytest.mark.kafka

DOCS = {
    f"notes/doc-{i}.txt": f"Document {i}. " + " ".join(f"word{i}-{j}" for j in range(300 * (i + 1))) for i in range(3)
}


def indexed(bootstrap: str, topic: str) -> dict[str, IndexStatus]:
    latest = {}
    for m in read_topic(bootstrap, topic, idle_s=1.0):
        status = IndexStatus()
        status.ParseFromString(m.value or b"")
        latest[m.key] = status
    return {k: s for k, s in latest.items() if s.state == IndexState.INDEX_STATE_INDEXED}


def test_kill_between_produce_and_commit(deployment, bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    from local_stack.stack import start_services

    prefix = deployment.topic_prefix
    start_services([deployment.service(n) for n in ("sqs_bridge", "normalizer", "index_updater")])
    held = deployment.service(
        "text_embedder", MMRAG_FAULT_HOLD_BEFORE_COMMIT_S="600", MMRAG_MAX_BATCH="8", MMRAG_MAX_WAIT_MS="3000"
    )
    start_services([held])
    store = S3ObjectStore(deployment.s3_settings(), "test")
    for key, text in DOCS.items():
        store.put(deployment.bucket, key, text.encode())

    marker = deployment.state_dir / "hold-text_embedder"
    wait_for(marker.exists, 90, "the text embedder to hold an uncommitted transaction")
    uncommitted = [m for m in read_topic(bootstrap, f"{prefix}embeddings.v1", committed_only=False, idle_s=1)]
    assert uncommitted, "the held transaction produced its embeddings before the kill"
    held.kill()

    start_services([deployment.service("text_embedder")])  # same instance id: fences and aborts the old one
    oids = {f"{deployment.bucket}/{key}" for key in DOCS}
    wait_for(lambda: oids <= set(indexed(bootstrap, f"{prefix}index-status.v1")), 90, "all documents indexed")

    committed = [m for m in read_topic(bootstrap, f"{prefix}embeddings.v1") if m.key in oids]
    assert sorted(m.key for m in committed) == sorted(oids), "exactly one committed embedding batch per object"
    all_written = read_topic(bootstrap, f"{prefix}embeddings.v1", committed_only=False)
    assert len([m for m in all_written if m.key in oids]) > len(committed), "the aborted batch is in the log"

    env = deployment.env()
    space_settings = SpaceSettings(clip_model_dir=deployment.clip_model_dir)
    store_settings = VectorStoreSettings(
        milvus_uri=env["MMRAG_MILVUS_URI"], collection_prefix=env["MMRAG_COLLECTION_PREFIX"]
    )
    space = space_from_settings(space_settings)
    index = MilvusIndex.for_space(store_settings, space)
    index.start()
    for m in committed:
        batch = EmbeddingBatch()
        batch.ParseFromString(m.value or b"")
        expected = sorted(vector_id(batch.object_id, batch.version, f"chunk-{c.index}", space.id) for c in batch.chunks)
        rows = index.rows_of(batch.object_id)
        assert sorted(r.vector_id for r in rows) == expected
        assert len(expected) == len(set(expected)) == len(batch.chunks) >= 1
