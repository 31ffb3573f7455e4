"""Faiss shards end to end on the real broker: the index updater (MMRAG_INDEX_BACKEND=faiss, 3 shards) writes
vectors.v1, one Faiss worker per shard (two replicas for shard 0) answers search.requests.v1.

Checked: every object's rows live on exactly its shard's partition; the top-k merged from the three shards equals
an exact index built from the whole log; deletes and overwrites reach the answers; a replica killed with SIGKILL
restarts from its snapshot plus the log and answers identically to the replica that never died."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from local_stack.services import Service
from mmrag.faiss_index import FaissIndex, FaissSettings
from mmrag.ids import shard_for
from mmrag.messages import now_ms
from mmrag.pb.events_pb2 import Chunk, EmbeddingBatch, Modality, SearchReply, SearchRequest
from mmrag.request_reply import ReplyAddress
from mmrag.settings import SpaceSettings
from mmrag.space import EmbeddingSpace, space_from_settings
from mmrag.topics import Topics, ensure_topics
from mmrag.vector_log import decode_record, from_record
from tests.index_tools import index_env, statuses, text_batch
from tests.kafka_tools import read_topic, wait_for

pytestmark = pytest.mark.kafka
SHARDS = 3
TOP_K = 8


class Searcher:
    """Sends SearchRequests and collects one reply per shard from reply partition 0."""

    def __init__(self, bootstrap: str, topics: Topics, space_id: str) -> None:
        self.topics, self.space_id = topics, space_id
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.replies = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}"})
        _, high = self.replies.get_watermark_offsets(TopicPartition(topics.search_replies, 0), timeout=10)
        self.replies.assign([TopicPartition(topics.search_replies, 0, high)])

    def ask(self, query: np.ndarray, top_k: int = TOP_K, timeout_s: float = 60) -> dict[int, SearchReply]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:  # a rebalance may hold a request past its deadline: ask again
            cid = uuid.uuid4().hex
            address = ReplyAddress(cid, self.topics.search_replies, 0, now_ms() + 8000)
            request = SearchRequest(  # chunk level (raw_chunks): what an exact index of the same rows returns
                correlation_id=cid, space_id=self.space_id, query_vector=query.tolist(), top_k=top_k, raw_chunks=True
            )
            self.producer.produce(
                self.topics.search_requests, request.SerializeToString(), cid, headers=address.headers()
            )
            self.producer.flush(10)
            got = self._collect(cid, time.monotonic() + 9)
            if len(got) == SHARDS:
                return got
        raise AssertionError(f"no reply from every shard within {timeout_s}s")

    def _collect(self, cid: str, until: float) -> dict[int, SearchReply]:
        got: dict[int, SearchReply] = {}
        while time.monotonic() < until and len(got) < SHARDS:
            msg = self.replies.poll(0.2)
            if msg is None or msg.error():
                continue
            reply = SearchReply()
            reply.ParseFromString(msg.value())
            if reply.correlation_id == cid:
                assert not reply.error, reply.error
                got[reply.shard] = reply
        return got

    def merged(self, query: np.ndarray) -> list[tuple[str, float, str, str]]:
        hits = [h for reply in self.ask(query).values() for h in reply.hits]
        hits.sort(key=lambda h: (-h.score, h.vector_id))
        return [(h.vector_id, h.score, h.object_id, h.version) for h in hits[:TOP_K]]

    def close(self) -> None:
        self.replies.close()


def image_batch(space: EmbeddingSpace, oid: str, version: str, at_ms: int, rng: np.random.Generator) -> EmbeddingBatch:
    return EmbeddingBatch(
        object_id=oid,
        version=version,
        modality=Modality.MODALITY_IMAGE,
        model_id=space.image_model_id,
        dim=space.image_dim,
        chunks=[Chunk(index=0, vector=rng.standard_normal(space.image_dim).tolist())],
        event_time_ms=at_ms,
    )


def exact_from_log(bootstrap: str, topics: Topics, dim: int) -> tuple[FaissIndex, dict[str, set[int]]]:
    """A single exact index of everything vectors.v1 holds, and the partitions each object's records are on."""
    index = FaissIndex(dim, FaissSettings(faiss_ann_threshold=10**9, faiss_gpu="off"))
    partitions: dict[str, set[int]] = defaultdict(set)
    for m in sorted(read_topic(bootstrap, topics.vectors, idle_s=1.5), key=lambda m: (m.partition, m.offset)):
        partitions[m.headers["object-id"]].add(m.partition)
        if m.value is None:
            index.delete([m.key or ""])
        else:
            index.upsert([from_record(decode_record(m.value))])
    return index, partitions


def processed(service: Service) -> float:
    with urllib.request.urlopen(service.probe_url + "/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith('mmrag_messages_processed_total{stage="retrieval_worker"}'):
                return float(line.split()[-1])
    return 0.0


def test_three_faiss_shards_with_replicas_deletes_and_a_killed_replica(  # type: ignore[no-untyped-def]
    infra, clip_dir: Path, tmp_path: Path, unique: str
) -> None:
    bootstrap = infra.bootstrap_servers
    topics = Topics(f"f{unique}.")
    ensure_topics(bootstrap, topics, vector_shards=SHARDS)
    space = space_from_settings(SpaceSettings(clip_model_dir=clip_dir))
    env = index_env(bootstrap, topics, clip_dir, SHARDS, tmp_path / "state", MMRAG_MAX_WAIT_MS="20")
    logs = tmp_path / "logs"

    def worker(shard: int, replica: str) -> Service:
        extra = {
            "MMRAG_SHARD": str(shard),
            "MMRAG_INSTANCE_ID": f"faiss-{shard}-{replica}",
            "MMRAG_FAISS_SNAPSHOT_DIR": str(tmp_path / f"snapshots-{replica}"),
            "MMRAG_FAISS_SNAPSHOT_INTERVAL_S": "1",
        }
        return Service(f"faiss-{shard}-{replica}", "consumers.faiss_worker", {**env, **extra}, logs)

    updater = Service("index-updater", "index_updater", {**env, "MMRAG_INDEX_BACKEND": "faiss"}, logs)
    workers = [worker(0, "a"), worker(0, "b"), worker(1, "a"), worker(2, "a")]
    services = [updater, *workers]
    producer = Producer({"bootstrap.servers": bootstrap})
    rng = np.random.default_rng(5)
    clock = [now_ms()]

    def send(batches: list[EmbeddingBatch]) -> None:
        for b in batches:
            producer.produce(topics.embeddings, b.SerializeToString(), b.object_id)
        producer.flush(10)

    def tick() -> int:
        clock[0] += 1000
        return clock[0]

    try:
        for s in services:
            s.start()
        oids = [f"bucket/doc-{i}.txt" for i in range(24)] + ['bucket/awk "q" \\ \t ü.png', "bucket/img-1.png"]
        send([text_batch(space, o, "v1", tick(), rng, 1 + len(o) % 3) for o in oids[:24]])
        send([image_batch(space, o, "v1", tick(), rng) for o in oids[20:]])  # 4 texts gain an image half
        wait_for(lambda: set(oids) <= set(statuses(bootstrap, topics)), 120, "every object indexed")
        for s in services:
            s.wait_ready(180)

        searcher = Searcher(bootstrap, topics, space.id)
        queries = [rng.standard_normal(space.dim).astype(np.float32) for _ in range(6)]

        def check_against_log() -> list[list[tuple[str, float, str, str]]]:
            exact, partitions = exact_from_log(bootstrap, topics, space.dim)
            for oid, parts in partitions.items():
                assert parts == {shard_for(oid, SHARDS)}, f"{oid!r} on partitions {parts}"
            answers = []
            for q in queries:
                merged = wait_for(
                    lambda q=q: (
                        (m := searcher.merged(q))
                        and [h[0] for h in m] == [h.row.vector_id for h in exact.search(q, TOP_K)]
                        and m
                    ),
                    60,
                    "merged top-k equal to the exact index's",
                )
                want = exact.search(q, TOP_K)
                assert [s for _, s, _, _ in merged] == pytest.approx([h.score for h in want], abs=1e-4)
                answers.append(merged)
            return answers

        check_against_log()
        assert len({oid for a in check_against_log() for _, _, oid, _ in a}) > 1
        wait_for(lambda: processed(workers[0]) > 0 and processed(workers[1]) > 0, 60, "both shard-0 replicas answered")
        for _ in range(6):  # requests spread over both shard-0 replicas: each answer agrees with the log
            check_against_log()

        # deletes and overwrites
        deleted, rewritten = oids[:6], oids[6:12]
        send([EmbeddingBatch(object_id=o, version="v1", deleted=True, event_time_ms=tick()) for o in deleted])
        send([text_batch(space, o, "v2", tick(), rng, 1 + len(o) % 3) for o in rewritten])
        wait_for(
            lambda: all(statuses(bootstrap, topics)[o].version == "v2" for o in rewritten), 60, "overwrites indexed"
        )
        wait_for(
            lambda: not {h.object_id for r in searcher.ask(queries[0], 500).values() for h in r.hits} & set(deleted),
            60,
            "deleted objects gone from every shard",
        )
        hits = [h for r in searcher.ask(queries[0], 500).values() for h in r.hits]
        assert {h.version for h in hits if h.object_id in rewritten} == {"v2"}
        assert {h.object_id for h in hits} == set(oids) - set(deleted)
        check_against_log()

        # SIGKILL the shard-0 replica a after a snapshot; change shard 0 while it is dead; restart it
        killed = workers[0]
        watermarks = Consumer({"bootstrap.servers": bootstrap, "group.id": f"w-{unique}"})
        end = watermarks.get_watermark_offsets(TopicPartition(topics.vectors, 0), timeout=10)[1]
        watermarks.close()
        snaps = tmp_path / "snapshots-a" / f"{topics.vectors}-0"
        wait_for(lambda: (snaps / f"{end:020d}").exists(), 60, "a snapshot of shard 0 at its end offset")
        killed.kill()
        on_zero = [o for o in oids[12:] if shard_for(o, SHARDS) == 0]
        assert on_zero, "some live object is on shard 0"
        send([text_batch(space, o, "v3", tick(), rng, 1 + len(o) % 3) for o in on_zero[:2]])
        send([EmbeddingBatch(object_id=o, version="v1", deleted=True, event_time_ms=tick()) for o in on_zero[2:3]])
        wait_for(lambda: statuses(bootstrap, topics)[on_zero[0]].version == "v3", 60, "changes while a replica is down")
        survivor = check_against_log()  # replica b alone serves shard 0
        restarted = worker(0, "a")
        restarted.start().wait_ready(180)
        assert f"loaded snapshot at offset {end}" in restarted.log_path.read_text()
        workers[1].stop()
        assert check_against_log() == survivor  # replica a alone: identical answers after its restart
        services.append(restarted)
        searcher.close()
    finally:
        for s in services:
            s.stop()
        for s in services:
            if s.proc is not None and s.proc.returncode not in (0, -9, None):
                print(f"--- {s.name} exited {s.proc.returncode}:\n{s.log_tail(40)}")
