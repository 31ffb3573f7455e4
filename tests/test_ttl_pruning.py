"""TTL pruning: objects whose indexed version is older than the TTL are deleted from the index through the normal
delete path (expired EmbeddingBatch -> index updater -> tombstones on vectors.v1, status EXPIRED); a version
updated or deleted after the job looked is left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from index_updater.fusion import plan_update
from index_updater.pruning import DAY_MS, PruningSettings, expiring, prune
from local_stack.services import Service
from mmrag.messages import now_ms
from mmrag.pb.events_pb2 import EmbeddingBatch, IndexState, IndexStatus
from mmrag.settings import SpaceSettings
from mmrag.space import EmbeddingSpace, space_from_settings
from mmrag.topics import Topics, ensure_topics
from mmrag.vector_index import VectorRow
from tests.index_tools import index_env, statuses, text_batch
from tests.kafka_tools import read_topic, wait_for

SPACE = EmbeddingSpace("text@1", 4, "clip@1", 3, 0.8, 0.6)


def row(version: str) -> VectorRow:
    return VectorRow("id-" + version, "b/o", version, 0, 0, np.ones(7, dtype=np.float32), has_text=True)


@pytest.mark.unit
def test_expiry_deletes_only_the_version_it_names() -> None:
    expired = EmbeddingBatch(object_id="b/o", version="v1", deleted=True, expired=True, event_time_ms=100)
    plan = plan_update(expired, [row("v1")], SPACE, 2, 999)
    assert (plan.status.state, plan.deletes) == (IndexState.INDEX_STATE_EXPIRED, ["id-v1"])
    replaced = plan_update(expired, [row("v2")], SPACE, 2, 999)  # a newer version was indexed meanwhile
    assert (replaced.status.state, replaced.deletes) == (IndexState.INDEX_STATE_SKIPPED, [])
    gone = plan_update(expired, [], SPACE, 2, 999)  # deleted meanwhile: the DELETED status stays the last word
    assert gone.status.state == IndexState.INDEX_STATE_SKIPPED


@pytest.mark.unit
def test_only_indexed_objects_older_than_the_ttl_expire() -> None:
    now = 100 * DAY_MS
    statuses = {
        "b/old": IndexStatus(
            object_id="b/old", version="v1", state=IndexState.INDEX_STATE_INDEXED, event_time_ms=now - 40 * DAY_MS
        ),
        "b/new": IndexStatus(
            object_id="b/new", version="v3", state=IndexState.INDEX_STATE_INDEXED, event_time_ms=now - DAY_MS
        ),
        "b/del": IndexStatus(
            object_id="b/del", version="v1", state=IndexState.INDEX_STATE_DELETED, event_time_ms=now - 90 * DAY_MS
        ),
    }
    (batch,) = expiring(statuses, now, ttl_days=30)
    assert (batch.object_id, batch.version, batch.deleted, batch.expired) == ("b/old", "v1", True, True)
    assert batch.event_time_ms == now - 40 * DAY_MS


@pytest.mark.kafka
def test_pruning_job_expires_old_objects_through_the_updater(  # type: ignore[no-untyped-def]
    infra, clip_dir: Path, tmp_path: Path, unique: str
) -> None:
    bootstrap = infra.bootstrap_servers
    topics = Topics(f"p{unique}.")
    ensure_topics(bootstrap, topics, vector_shards=2)
    space = space_from_settings(SpaceSettings(clip_model_dir=clip_dir))
    env = index_env(bootstrap, topics, clip_dir, 2, tmp_path / "state", MMRAG_INDEX_BACKEND="faiss")
    now = now_ms()
    ages = {"bk/old-1.txt": 40, 'bk/old "2"\t.txt': 31, "bk/fresh.txt": 1}
    producer = Producer({"bootstrap.servers": bootstrap})
    rng = np.random.default_rng(0)
    for oid, days in ages.items():
        batch = text_batch(space, oid, "v1", now - days * DAY_MS, rng)
        producer.produce(topics.embeddings, batch.SerializeToString(), oid)
    producer.flush(10)
    updater = Service("index-updater", "index_updater", env, tmp_path / "logs")

    def states() -> dict[str, int]:
        return {oid: s.state for oid, s in statuses(bootstrap, topics).items()}

    try:
        updater.start().wait_ready(120)
        wait_for(lambda: len(states()) == 3, 90, "three objects indexed")
        settings = PruningSettings(bootstrap_servers=bootstrap, topic_prefix=topics.prefix, ttl_days=30)
        assert set(prune(settings, dry_run=True)) == {"bk/old-1.txt", 'bk/old "2"\t.txt'}
        assert states()["bk/old-1.txt"] == IndexState.INDEX_STATE_INDEXED  # a dry run sends nothing
        assert set(prune(settings)) == {"bk/old-1.txt", 'bk/old "2"\t.txt'}
        expired = IndexState.INDEX_STATE_EXPIRED
        wait_for(lambda: [s == expired for s in states().values()].count(True) == 2, 60, "two objects expired")
        assert states()["bk/fresh.txt"] == IndexState.INDEX_STATE_INDEXED
        assert prune(settings) == []  # expired objects are no longer indexed: a second run sends nothing
    finally:
        updater.stop()
    records = read_topic(bootstrap, topics.vectors, idle_s=1.5)
    tombstoned = {m.headers["object-id"] for m in records if m.value is None}
    assert tombstoned == {"bk/old-1.txt", 'bk/old "2"\t.txt'}
