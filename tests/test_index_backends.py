"""MMRAG_INDEX_BACKEND of the index updater on the real broker and milvus-lite: `milvus` writes Milvus only,
`both` writes Milvus and the same rows to vectors.v1 (partition = shard, tombstones for deleted vector ids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from local_stack.services import Service
from mmrag.ids import shard_for
from mmrag.messages import now_ms
from mmrag.milvus_index import MilvusIndex
from mmrag.pb.events_pb2 import EmbeddingBatch, IndexState
from mmrag.settings import SpaceSettings
from mmrag.space import space_from_settings
from mmrag.topics import Topics, ensure_topics
from mmrag.vector_log import decode_record
from tests.index_tools import index_env, statuses, text_batch
from tests.kafka_tools import read_topic, wait_for

pytestmark = pytest.mark.kafka
SHARDS = 2


@pytest.mark.parametrize("backend", ["milvus", "both"])
def test_updater_backends(infra, clip_dir: Path, tmp_path: Path, unique: str, backend: str) -> None:  # type: ignore[no-untyped-def]
    bootstrap = infra.bootstrap_servers
    topics = Topics(f"b{unique}.")
    ensure_topics(bootstrap, topics, vector_shards=SHARDS)
    space = space_from_settings(SpaceSettings(clip_model_dir=clip_dir))
    env = index_env(
        bootstrap,
        topics,
        clip_dir,
        SHARDS,
        tmp_path / "state",
        MMRAG_MILVUS_URI=infra.milvus_uri,
        MMRAG_COLLECTION_PREFIX=f"b{unique}",
        MMRAG_INDEX_BACKEND=backend,
    )
    updater = Service("index-updater", "index_updater", env, tmp_path / "logs")
    rng = np.random.default_rng(0)
    oids = ["bk/a.txt", 'bk/q"uote\\ \t ü.txt', "bk/c.txt", "bk/d.txt"]
    producer = Producer({"bootstrap.servers": bootstrap})
    at = now_ms()
    for i, oid in enumerate(oids):
        producer.produce(topics.embeddings, text_batch(space, oid, "v1", at + i, rng, 2).SerializeToString(), oid)
    producer.produce(
        topics.embeddings,
        EmbeddingBatch(object_id=oids[3], deleted=True, event_time_ms=at + 10).SerializeToString(),
        oids[3],
    )
    producer.flush(10)

    def deleted(oid: str) -> bool:
        status = statuses(bootstrap, topics).get(oid)
        return status is not None and status.state == IndexState.INDEX_STATE_DELETED

    try:
        updater.start().wait_ready(120)

        wait_for(lambda: deleted(oids[3]), 90, "the delete applied")
    finally:
        updater.stop()
    milvus = MilvusIndex(infra.milvus_uri, f"b{unique}_{space.id}", space.dim)
    milvus.start()
    in_milvus = {r.vector_id: r for oid in oids for r in milvus.rows_of(oid)}
    assert sorted({r.object_id for r in in_milvus.values()}) == sorted(oids[:3]) and len(in_milvus) == 6
    records = read_topic(bootstrap, topics.vectors, idle_s=1.5)
    if backend == "milvus":
        assert records == []
        return
    live = {m.key: m for m in records if m.value is not None}
    assert set(live) - {m.key for m in records if m.value is None} >= set(in_milvus)
    for vid, row in in_milvus.items():
        record = decode_record(live[vid].value or b"")
        assert (record.object_id, record.text, record.space_id) == (row.object_id, row.text, space.id)
        np.testing.assert_allclose(record.vector, row.vector, rtol=1e-6)
        assert live[vid].partition == shard_for(row.object_id, SHARDS) == record.shard
    tombstones = [m for m in records if m.value is None]
    assert len(tombstones) == 2 and {m.headers["object-id"] for m in tombstones} == {oids[3]}
    assert {m.partition for m in tombstones} == {shard_for(oids[3], SHARDS)}
