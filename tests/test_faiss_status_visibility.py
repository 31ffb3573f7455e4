"""With Faiss, "indexed" means searchable (issue 20): on the real broker, the index updater holds each status until
every serving Faiss replica of the object's shard has applied its rows (vectors.applied.v1). Two shards, shard 0
with two replicas that split its requests: the moment a status is read, a search restricted to that object is
sent, and every answer must be that status's version (indexed, overwritten) or nothing (deleted): 0 stale."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from local_stack.services import Service
from mmrag.kafka_clients import watermark_offsets
from mmrag.messages import now_ms
from mmrag.pb.events_pb2 import EmbeddingBatch, IndexState, IndexStatus, SearchReply, SearchRequest
from mmrag.request_reply import ReplyAddress
from mmrag.settings import SpaceSettings
from mmrag.space import space_from_settings
from mmrag.topics import Topics, ensure_topics
from tests.index_tools import index_env, text_batch
from tests.test_faiss_shards import processed

pytestmark = pytest.mark.kafka
SHARDS = 2


class ObjectSearch:
    """A vector search restricted to one object, straight to the shard workers; the versions every shard found."""

    def __init__(self, bootstrap: str, topics: Topics, space_id: str, dim: int) -> None:
        self.topics, self.space_id, self.query = topics, space_id, np.ones(dim, dtype=np.float32).tolist()
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.replies = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}"})
        _, high = watermark_offsets(self.replies, TopicPartition(topics.search_replies, 0), 30)
        self.replies.assign([TopicPartition(topics.search_replies, 0, high)])

    def versions(self, oid: str, timeout_s: float = 10) -> set[str] | None:
        """The versions of ``oid`` the shards hold, or None when some shard did not answer in time."""
        cid = uuid.uuid4().hex
        address = ReplyAddress(cid, self.topics.search_replies, 0, now_ms() + int(timeout_s * 1000))
        request = SearchRequest(
            correlation_id=cid, space_id=self.space_id, query_vector=self.query, top_k=5, object_ids=[oid]
        )
        self.producer.produce(self.topics.search_requests, request.SerializeToString(), cid, headers=address.headers())
        self.producer.flush(10)
        got: dict[int, SearchReply] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(got) < SHARDS:
            msg = self.replies.poll(0.05)
            if msg is None or msg.error():
                continue
            reply = SearchReply()
            reply.ParseFromString(msg.value())
            if reply.correlation_id == cid:
                assert not reply.error, reply.error
                got[reply.shard] = reply
        if len(got) < SHARDS:
            return None
        return {h.version for r in got.values() for h in r.hits if h.object_id == oid}

    def close(self) -> None:
        self.replies.close()


def status_consumer(bootstrap: str, topics: Topics) -> Consumer:
    """index-status.v1 from its end, as the query service reads it (committed records only)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"s-{uuid.uuid4().hex}", "isolation.level": "read_committed"}
    )
    ends = [TopicPartition(topics.index_status, p) for p in range(3)]
    consumer.assign([TopicPartition(tp.topic, tp.partition, watermark_offsets(consumer, tp, 30)[1]) for tp in ends])
    return consumer


def test_search_finds_what_a_faiss_status_says_the_moment_it_says_it(
    infra, clip_dir: Path, tmp_path: Path, unique: str
) -> None:  # type: ignore[no-untyped-def]
    bootstrap = infra.bootstrap_servers
    topics = Topics(f"v{unique}.")
    ensure_topics(bootstrap, topics, vector_shards=SHARDS)
    space = space_from_settings(SpaceSettings(clip_model_dir=clip_dir))
    env = index_env(bootstrap, topics, clip_dir, SHARDS, tmp_path / "state", MMRAG_MAX_WAIT_MS="20")
    logs = tmp_path / "logs"

    def worker(shard: int, replica: str) -> Service:
        extra = {"MMRAG_SHARD": str(shard), "MMRAG_INSTANCE_ID": f"faiss-{shard}-{replica}"}
        return Service(f"faiss-{shard}-{replica}", "consumers.faiss_worker", {**env, **extra}, logs)

    services = [
        Service("index-updater", "index_updater", {**env, "MMRAG_INDEX_BACKEND": "faiss"}, logs),
        worker(0, "a"),
        worker(0, "b"),
        worker(1, "a"),
    ]
    producer = Producer({"bootstrap.servers": bootstrap})
    rng = np.random.default_rng(20)
    search = ObjectSearch(bootstrap, topics, space.id, space.dim)
    tail = status_consumer(bootstrap, topics)  # before anything is indexed: it reads every status

    def send(changes: list[EmbeddingBatch]) -> None:
        for change in changes:
            producer.produce(topics.embeddings, change.SerializeToString(), change.object_id)
        producer.flush(10)

    def check_each_status(expected: int) -> list[tuple[str, str, str, set[str]]]:
        """Searches for each object the moment its status is read; the (object, version, state, found) of each."""
        checked: list[tuple[str, str, str, set[str]]] = []
        deadline = time.monotonic() + 120
        while len(checked) < expected:
            assert time.monotonic() < deadline, f"{len(checked)} of {expected} statuses read"
            msg = tail.poll(0.02)
            if msg is None or msg.error():
                continue
            status = IndexStatus()
            status.ParseFromString(msg.value() or b"")
            found = search.versions(status.object_id)
            assert found is not None, f"a shard did not answer for {status.object_id}"
            checked.append((status.object_id, status.version, IndexState.Name(status.state), found))
        return checked

    try:
        for s in services:
            s.start()
        for s in services:
            s.wait_ready(180)
        warm = "bucket/warm-up.txt"
        send([text_batch(space, warm, "v1", now_ms(), rng)])
        check_each_status(1)
        deadline = time.monotonic() + 120
        while search.versions(warm) != {"v1"}:  # every shard group assigned and answering
            assert time.monotonic() < deadline, "the shard workers never answered"

        oids = [f"bucket/doc-{i}.txt" for i in range(40)]
        send([text_batch(space, o, "v1", now_ms(), rng, 1 + i % 3) for i, o in enumerate(oids)])
        indexed = check_each_status(len(oids))
        send([text_batch(space, o, "v2", now_ms(), rng, 2) for o in oids[:15]])
        overwritten = check_each_status(15)
        deleted_ids = oids[25:]
        send([EmbeddingBatch(object_id=o, version="v1", deleted=True, event_time_ms=now_ms()) for o in deleted_ids])
        deleted = check_each_status(len(deleted_ids))

        assert {(o, v, state) for o, v, state, _ in indexed} == {(o, "v1", "INDEX_STATE_INDEXED") for o in oids}
        assert {(o, v) for o, v, _, _ in overwritten} == {(o, "v2") for o in oids[:15]}
        assert {(o, state) for o, _, state, _ in deleted} == {(o, "INDEX_STATE_DELETED") for o in deleted_ids}
        stale = [c for c in indexed + overwritten if c[3] != {c[1]}] + [c for c in deleted if c[3]]
        assert stale == [], f"{len(stale)} answers not what the status said, e.g. {stale[:3]}"
        assert processed(services[1]) > 0 and processed(services[2]) > 0, "both shard-0 replicas answered"
    finally:
        search.close()
        tail.close()
        for s in services:
            s.stop()
