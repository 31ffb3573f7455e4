"""'Indexed' means searchable by keywords too (issue 18: with the keyword index rebuilt every 30 s, recall@5 right
after every status said indexed was 0.40). On the real broker and milvus-lite: the moment index-status.v1 says a
document is indexed, a keyword-only request to the retrieval workers finds it by an identifier only it holds; an
overwrite is found by its new words and not its old ones the moment its status says so; a delete is gone. On a
Faiss shard, every change reaches its keyword index before its vector index, and a restarted shard has both."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from consumers.faiss_worker.shard import FaissShard
from mmrag.faiss_index import FaissSettings
from mmrag.messages import now_ms
from mmrag.pb.events_pb2 import (
    EmbeddingBatch,
    IndexState,
    IndexStatus,
    SearchHit,
    SearchReply,
    SearchRequest,
)
from mmrag.request_reply import ReplyAddress
from mmrag.settings import SpaceSettings
from mmrag.space import space_from_settings
from mmrag.topics import Topics, ensure_topics
from mmrag.vector_index import NO_FILTER, VectorRow
from mmrag.vector_log import vector_outputs
from tests.index_tools import text_batch

pytestmark = pytest.mark.kafka

SOLAR = "Solar inverter fault F-2307 means grid overvoltage on long feeder lines."
CELLO = "Cello strings go flat in dry winter air; retune the pegs slowly."
DECOYS = {
    "docs/f2308.md": "Solar inverter fault F-2308 means a fan failure in the cabinet.",
    "docs/kafka.md": "Kafka consumer groups split the partitions of a topic between their members.",
    "docs/bread.md": "A sourdough starter with a layer of hooch on top is hungry: feed it more often.",
}


class KeywordAsker:
    """Keyword-only requests straight to the retrieval workers (one reply per shard on reply partition 0)."""

    def __init__(self, bootstrap: str, topics: Topics, space_id: str, shards: int) -> None:
        self.topics, self.space_id, self.shards = topics, space_id, shards
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.replies = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}"})
        _, high = self.replies.get_watermark_offsets(TopicPartition(topics.search_replies, 0), timeout=10)
        self.replies.assign([TopicPartition(topics.search_replies, 0, high)])

    def hits(self, text: str, timeout_s: float = 10) -> list[SearchHit] | None:
        """Every shard's hits, best first, or None when some shard did not answer in time."""
        cid = uuid.uuid4().hex
        address = ReplyAddress(cid, self.topics.search_replies, 0, now_ms() + int(timeout_s * 1000))
        request = SearchRequest(correlation_id=cid, space_id=self.space_id, top_k=5, query_text=text, keyword=True)
        self.producer.produce(self.topics.search_requests, request.SerializeToString(), cid, headers=address.headers())
        self.producer.flush(10)
        got: list[SearchReply] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(got) < self.shards:
            msg = self.replies.poll(0.1)
            if msg is None or msg.error():
                continue
            reply = SearchReply()
            reply.ParseFromString(msg.value())
            if reply.correlation_id == cid:
                assert not reply.error, reply.error
                got.append(reply)
        if len(got) < self.shards:
            return None
        return sorted((h for r in got for h in r.hits), key=lambda h: -h.score)

    def found(self, text: str) -> list[tuple[str, str]]:
        hits = self.hits(text)
        assert hits is not None, f"a shard did not answer {text!r}"
        return [(h.object_id, h.version) for h in hits]

    def close(self) -> None:
        self.replies.close()


class StatusTail:
    """index-status.v1 as the query service reads it (committed records only), from its start."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"status-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        self.consumer.subscribe([topics.index_status])
        self.seen: set[tuple[str, str, int]] = set()

    def wait(self, oid: str, version: str, state: int, timeout_s: float = 120) -> None:
        """Returns as soon as that status was read (now or before)."""
        deadline = time.monotonic() + timeout_s
        while (oid, version, state) not in self.seen:
            assert time.monotonic() < deadline, f"no status {IndexState.Name(state)} of {oid} {version}"
            msg = self.consumer.poll(0.05)
            if msg is not None and not msg.error():
                status = IndexStatus()
                status.ParseFromString(msg.value() or b"")
                self.seen.add((status.object_id, status.version, status.state))

    def close(self) -> None:
        self.consumer.close()


def test_milvus_keyword_search_finds_a_document_the_moment_its_status_says_indexed(deployment: Any) -> None:
    from local_stack.stack import start_services

    # MMRAG_KEYWORD_REFRESH_S left at its default (30 s): the side index is only the fallback
    start_services([deployment.service("index_updater"), *deployment.shard_workers()])
    space = space_from_settings(SpaceSettings(clip_model_dir=deployment.clip_model_dir))
    topics = Topics(deployment.topic_prefix)
    bootstrap = deployment.endpoints.bootstrap_servers
    asker = KeywordAsker(bootstrap, topics, space.id, deployment.shards)
    statuses = StatusTail(bootstrap, topics)
    producer = Producer({"bootstrap.servers": bootstrap})
    rng = np.random.default_rng(18)

    def send(oid: str, version: str, text: str = "", deleted: bool = False) -> None:
        change = (
            EmbeddingBatch(object_id=oid, version=version, deleted=True, event_time_ms=now_ms())
            if deleted
            else text_batch(space, oid, version, now_ms(), rng, text=text)
        )
        producer.produce(topics.embeddings, change.SerializeToString(), oid)
        producer.flush(10)

    try:
        b = deployment.bucket
        for key, text in DECOYS.items():
            send(f"{b}/{key}", "v1", text)
        for key in DECOYS:
            statuses.wait(f"{b}/{key}", "v1", IndexState.INDEX_STATE_INDEXED)
        deadline = time.monotonic() + 120
        while asker.hits("hooch", 5) is None:  # both request groups assigned
            assert time.monotonic() < deadline, "the retrieval workers never answered"

        solar = f"{b}/docs/solar.md"
        send(solar, "v1", SOLAR)
        statuses.wait(solar, "v1", IndexState.INDEX_STATE_INDEXED)
        assert asker.found("F-2307") == [(solar, "v1")]  # at once: no other document holds the code
        assert asker.found("inverter fault F-2307")[:2] == [(solar, "v1"), (f"{b}/docs/f2308.md", "v1")]

        send(solar, "v2", CELLO)
        statuses.wait(solar, "v2", IndexState.INDEX_STATE_INDEXED)
        assert asker.found("cello pegs") == [(solar, "v2")]
        assert asker.found("F-2307") == []
        assert (solar, "v1") not in asker.found("inverter fault")

        send(solar, "v2", deleted=True)
        statuses.wait(solar, "v2", IndexState.INDEX_STATE_DELETED)
        assert asker.found("cello pegs") == []
    finally:
        asker.close()
        statuses.close()


def rows(version: str, texts: dict[str, str], dim: int) -> list[VectorRow]:
    rng = np.random.default_rng(len(version))
    return [
        VectorRow(vid, f"b/{vid}.md", version, 0, 0, rng.standard_normal(dim).astype(np.float32), text, has_text=True)
        for vid, text in texts.items()
    ]


def test_a_faiss_shard_changes_its_keyword_index_before_its_vectors(
    bootstrap: str, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dim = 8
    topics = Topics(f"k{unique}.")
    ensure_topics(bootstrap, topics, vector_shards=1)
    producer = Producer({"bootstrap.servers": bootstrap})

    def write(upserts: list[VectorRow], deletes: Sequence[str] = ()) -> None:
        for out in vector_outputs(topics.vectors, upserts, deletes, "b/any", 0, "space"):
            value = None if out.value is None else out.value.SerializeToString()
            producer.produce(out.topic, value, out.key, partition=out.partition, headers=out.headers)
        producer.flush(10)

    def shard() -> FaissShard:
        settings = FaissSettings(faiss_gpu="off")
        return FaissShard(bootstrap, topics.vectors, 0, "space", dim, settings, tmp_path / "snapshots", 3600, 3600)

    write(rows("v1", {"solar": SOLAR, "bread": DECOYS["docs/bread.md"]}, dim))
    first = shard()
    first.start()  # reads up to the end: the keyword index holds what the vectors hold
    assert [h.row.vector_id for h in first.keyword_search("F-2307", 5)] == ["solar"]

    def keyword_ids(text: str) -> set[tuple[str, str]]:
        return {(h.row.vector_id, h.row.version) for h in first.keyword_search(text, 10, 0, NO_FILTER)}

    seen: list[tuple[str, bool]] = []  # (change, whether the keyword index had it when the vectors got it)
    upsert, delete = first.index.upsert, first.index.delete

    def upsert_after_keywords(new: list[VectorRow]) -> None:
        seen.extend((r.vector_id, (r.vector_id, r.version) in keyword_ids(r.text)) for r in new)
        upsert(new)

    def delete_after_keywords(vids: list[str]) -> None:
        held = {vid for vid, _ in keyword_ids(DECOYS["docs/bread.md"])}
        seen.extend((f"-{vid}", vid not in held) for vid in vids)
        delete(vids)

    monkeypatch.setattr(first.index, "upsert", upsert_after_keywords)
    monkeypatch.setattr(first.index, "delete", delete_after_keywords)
    write(rows("v2", {"solar": CELLO, "kafka": DECOYS["docs/kafka.md"]}, dim), ["bread"])
    deadline = time.monotonic() + 30
    while first.index.count() != 2 or first.index.rows_of("b/bread.md"):
        assert time.monotonic() < deadline, "the shard never applied the changes"
        time.sleep(0.05)
    assert sorted(seen) == [("-bread", True), ("kafka", True), ("solar", True)]
    assert keyword_ids("F-2307") == set() and keyword_ids("cello") == {("solar", "v2")} and not keyword_ids("hooch")
    first.close()  # a last snapshot

    again = shard()
    again.start()  # from the snapshot: its keyword index is built from the snapshot's rows
    try:
        found = {(h.row.vector_id, h.row.version) for h in again.keyword_search("cello kafka sourdough", 5)}
        assert found == {("kafka", "v2"), ("solar", "v2")}
    finally:
        again.close(snapshot=False)
