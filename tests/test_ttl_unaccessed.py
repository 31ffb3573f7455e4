"""TTL by not-accessed: the pruning job folds search.replies.v1 into object-access.v1 (one record per object, offsets
committed after), and expires through the normal delete path (status EXPIRED, vectors.v1 tombstones) the indexed
objects no query returned for MMRAG_TTL_UNACCESSED_DAYS; replies lost to retention count as accesses until then."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from index_updater.access import ACCESS_GROUP, SINCE_KEY, Accesses, replied_objects, start_offset
from index_updater.pruning import DAY_MS, PruningSettings, prune, unaccessed
from local_stack.services import Service
from mmrag.messages import now_ms
from mmrag.pb.events_pb2 import IndexState, IndexStatus, SearchHit, SearchReply, SearchRequest
from mmrag.request_reply import ReplyAddress
from mmrag.settings import SpaceSettings
from mmrag.space import space_from_settings
from mmrag.topics import Topics, ensure_topics
from tests.index_tools import index_env, statuses, text_batch
from tests.kafka_tools import read_topic, wait_for

INDEXED, EXPIRED = IndexState.INDEX_STATE_INDEXED, IndexState.INDEX_STATE_EXPIRED


@pytest.mark.unit
def test_a_fold_starts_at_the_committed_offset_and_knows_when_replies_were_lost() -> None:
    assert start_offset(-1, 0) == (0, False)  # first fold of a whole log
    assert start_offset(-1, 40) == (40, True)  # first fold, retention already took replies
    assert start_offset(25, 10) == (25, False)  # the usual run
    assert start_offset(5, 10) == (10, True)  # retention took replies the last run had not folded


@pytest.mark.unit
def test_only_objects_no_query_returned_for_the_ttl_expire() -> None:
    now = 100 * DAY_MS

    def indexed(oid: str, days_ago: float, state: Any = INDEXED) -> IndexStatus:
        at = now - int(days_ago * DAY_MS)
        return IndexStatus(object_id=oid, version="v1", state=state, event_time_ms=at - 1000, indexed_at_ms=at)

    found = {
        "b/never": indexed("b/never", 40),
        "b/asked-lately": indexed("b/asked-lately", 40),
        "b/asked-long-ago": indexed("b/asked-long-ago", 60),
        "b/new": indexed("b/new", 5),
        "b/deleted": indexed("b/deleted", 60, IndexState.INDEX_STATE_DELETED),
    }
    accesses = Accesses({"b/asked-lately": now - 2 * DAY_MS, "b/asked-long-ago": now - 45 * DAY_MS})
    expired = unaccessed(found, accesses, now, days=30)
    assert [(b.object_id, b.version, b.deleted, b.expired) for b in expired] == [
        ("b/asked-long-ago", "v1", True, True),
        ("b/never", "v1", True, True),
    ]
    assert expired[0].event_time_ms == found["b/asked-long-ago"].event_time_ms  # the version it expires
    lost = Accesses(accesses.last, since_ms=now - 10 * DAY_MS)  # accesses unknown before that: nothing expires yet
    assert unaccessed(found, lost, now, days=30) == []
    assert Accesses({"a": 5}).merge(Accesses({"a": 3, "b": 1}, since_ms=2)) == Accesses({"a": 5, "b": 1}, 2)


@pytest.mark.unit
def test_only_a_shards_hits_count_as_returned() -> None:
    hits = [SearchHit(object_id="b/x"), SearchHit(object_id="b/y"), SearchHit(object_id="b/x")]
    assert replied_objects(SearchReply(shard=0, hits=hits).SerializeToString()) == {"b/x", "b/y"}
    assert replied_objects(SearchReply(shard=0, hits=hits, error="index down").SerializeToString()) == set()
    assert replied_objects(b"\xff\xfe not a reply") == set()


def ask(bootstrap: str, topics: Topics, space_id: str, query: list[float]) -> SearchReply:
    """One search request to the shard's worker (top 1), as the query service sends it; its reply."""
    replies = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}"})
    _, high = replies.get_watermark_offsets(TopicPartition(topics.search_replies, 0), timeout=10)
    replies.assign([TopicPartition(topics.search_replies, 0, high)])
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    cid = uuid.uuid4().hex
    address = ReplyAddress(cid, topics.search_replies, 0, now_ms() + 30_000)
    request = SearchRequest(correlation_id=cid, space_id=space_id, query_vector=query, top_k=1)
    producer.produce(topics.search_requests, request.SerializeToString(), cid, headers=list(address.headers().items()))
    producer.flush(10)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            msg = replies.poll(0.2)
            if msg is not None and not msg.error():
                reply = SearchReply()
                reply.ParseFromString(msg.value() or b"")
                if reply.correlation_id == cid:
                    return reply
        raise AssertionError("no search reply within 40 s")
    finally:
        replies.close()


def committed(bootstrap: str, topic: str, prefix: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": prefix + ACCESS_GROUP})
    try:
        parts = [TopicPartition(topic, p) for p in range(4)]
        return [tp.offset for tp in consumer.committed(parts, timeout=10)]
    finally:
        consumer.close()


@pytest.mark.kafka
@pytest.mark.slow  # two waits of the TTL (30 s each) beside an updater and a worker: ~1.5-3.5 min
def test_pruning_job_expires_objects_no_query_returned(infra: Any, clip_dir: Path, tmp_path: Path, unique: str) -> None:
    bootstrap = infra.bootstrap_servers
    topics = Topics(f"a{unique}.")
    ensure_topics(bootstrap, topics, vector_shards=1)
    space = space_from_settings(SpaceSettings(clip_model_dir=clip_dir))
    env = index_env(bootstrap, topics, clip_dir, 1, tmp_path / "state", MMRAG_INDEX_BACKEND="faiss")
    producer = Producer({"bootstrap.servers": bootstrap})
    rng = np.random.default_rng(3)
    batches = {oid: text_batch(space, oid, "v1", now_ms(), rng) for oid in ("bk/asked.txt", 'bk/never "1"\t.txt')}
    for oid, batch in batches.items():
        producer.produce(topics.embeddings, batch.SerializeToString(), oid)
    producer.flush(10)
    logs = tmp_path / "logs"
    updater = Service("index-updater", "index_updater", env, logs)
    worker = Service("faiss-0", "consumers.faiss_worker", {**env, "MMRAG_SHARD": "0"}, logs)
    ttl_s = 30.0  # room on a loaded box for the runs that must fall within the TTL of the access
    settings = PruningSettings(
        bootstrap_servers=bootstrap, topic_prefix=topics.prefix, ttl_unaccessed_days=ttl_s / 86400
    )

    def states() -> dict[str, int]:
        return {oid: s.state for oid, s in statuses(bootstrap, topics).items()}

    try:
        updater.start()
        worker.start()
        wait_for(lambda: set(states().values()) == {INDEXED} and len(states()) == 2, 120, "both objects indexed")
        worker.wait_ready(180)
        indexed_at = max(s.indexed_at_ms for s in statuses(bootstrap, topics).values())
        time.sleep(max(0.0, (indexed_at + ttl_s * 1000 - now_ms()) / 1000) + 1)  # both older than the TTL now
        asked = batches["bk/asked.txt"]
        query = space.fuse(np.array(asked.chunks[0].vector, dtype=np.float32), None).tolist()
        reply = ask(bootstrap, topics, space.id, query)  # a real query returns bk/asked.txt: an access
        assert [h.object_id for h in reply.hits] == ["bk/asked.txt"]

        assert prune(settings, dry_run=True) == ['bk/never "1"\t.txt']
        assert read_topic(bootstrap, topics.object_access, idle_s=1.0) == []  # a dry run records nothing
        assert prune(settings) == ['bk/never "1"\t.txt']
        wait_for(lambda: states()['bk/never "1"\t.txt'] == EXPIRED, 60, "the unaccessed object expired")
        assert prune(settings) == []  # the access now comes from object-access.v1, the replies are not read again
        assert states()["bk/asked.txt"] == INDEXED
        access = {m.key: json.loads(m.value or b"{}") for m in read_topic(bootstrap, topics.object_access, idle_s=1.0)}
        assert list(access) == ["bk/asked.txt"] and SINCE_KEY not in access  # the whole reply log was there
        assert access["bk/asked.txt"]["last_access_ms"] > indexed_at
        ends = [read_high(bootstrap, topics.search_replies, p) for p in range(4)]
        assert committed(bootstrap, topics.search_replies, topics.prefix) == ends  # the replies are folded once

        time.sleep(max(0.0, (access["bk/asked.txt"]["last_access_ms"] + ttl_s * 1000 - now_ms()) / 1000) + 1)
        assert prune(settings) == ["bk/asked.txt"]  # no query returned it since
        wait_for(lambda: states()["bk/asked.txt"] == EXPIRED, 60, "the object no longer asked for expired")
    finally:
        updater.stop()
        worker.stop()
    tombstoned = {m.headers["object-id"] for m in read_topic(bootstrap, topics.vectors, idle_s=1.5) if m.value is None}
    assert tombstoned == {"bk/asked.txt", 'bk/never "1"\t.txt'}


def read_high(bootstrap: str, topic: str, partition: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1])
    finally:
        consumer.close()
