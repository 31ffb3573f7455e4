"""Index freshness on both paths: an embedding batch produced onto embeddings.v1 -> searchable through
search.requests.v1, p50 and p99, at a steady rate below capacity; Milvus (updater -> Milvus <- retrieval workers)
and Faiss (updater -> vectors.v1 -> Faiss workers), one after the other, on their own topics.

    uv run --no-sync python -m bench.index_freshness [--rate 2] [--seconds 30] [--shards 2]

Starts its own Kafka and milvus-lite (local_stack) and the deployables as processes. Each object's batch carries
one random vector; a poller asks every shard for each object not found yet (top 1, its own vector as the query)
every 100 ms, so times include up to one polling round (~100 ms plus a request-reply round trip). Upload ->
embedding (the normalizer and embedders) comes before this and is the same for both paths.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from local_stack.services import Service
from local_stack.stack import start_infra, stop_infra
from mmrag.clip import write_random_clip
from mmrag.ids import vector_id
from mmrag.messages import now_ms
from mmrag.pb.events_pb2 import Chunk, EmbeddingBatch, Modality, SearchReply, SearchRequest
from mmrag.request_reply import ReplyAddress
from mmrag.settings import SpaceSettings
from mmrag.space import EmbeddingSpace, space_from_settings
from mmrag.topics import Topics, ensure_topics


class Poller:
    """Asks every shard for the objects not found yet; records when each first comes back."""

    def __init__(self, bootstrap: str, topics: Topics, space: EmbeddingSpace, shards: int) -> None:
        self.topics, self.space, self.shards = topics, space, shards
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.replies = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
        _, high = self.replies.get_watermark_offsets(TopicPartition(topics.search_replies, 0), timeout=10)
        self.replies.assign([TopicPartition(topics.search_replies, 0, high)])
        self.pending: dict[str, tuple[np.ndarray, float]] = {}  # vector id -> (query, produced at)
        self.found: dict[str, float] = {}  # vector id -> seconds from produced to searchable

    def round(self) -> None:
        asked: dict[str, str] = {}
        for vid, (query, _) in self.pending.items():
            cid = uuid.uuid4().hex
            address = ReplyAddress(cid, self.topics.search_replies, 0, now_ms() + 5000)
            request = SearchRequest(correlation_id=cid, space_id=self.space.id, query_vector=query.tolist(), top_k=1)
            self.producer.produce(
                self.topics.search_requests, request.SerializeToString(), cid, headers=list(address.headers().items())
            )
            asked[cid] = vid
        self.producer.flush(5)
        answers = dict.fromkeys(asked, 0)  # replies per request: done once every shard answered
        until = time.monotonic() + 1.0
        while any(n < self.shards for n in answers.values()) and time.monotonic() < until:
            msg = self.replies.poll(0.05)
            if msg is None or msg.error():
                continue
            reply = SearchReply()
            reply.ParseFromString(msg.value() or b"")
            wanted = asked.get(reply.correlation_id)
            if wanted:
                answers[reply.correlation_id] += 1
            if wanted and any(h.vector_id == wanted for h in reply.hits) and wanted in self.pending:
                self.found[wanted] = time.monotonic() - self.pending.pop(wanted)[1]


def run_path(
    name: str, bootstrap: str, milvus_uri: str, clip_dir: Path, work: Path, args: argparse.Namespace
) -> list[float]:
    topics = Topics(f"fresh{uuid.uuid4().hex[:6]}.")
    ensure_topics(bootstrap, topics, vector_shards=args.shards)
    space = space_from_settings(SpaceSettings(clip_model_dir=clip_dir))
    env = {
        "MMRAG_BOOTSTRAP_SERVERS": bootstrap,
        "MMRAG_TOPIC_PREFIX": topics.prefix,
        "MMRAG_CLIP_MODEL_DIR": str(clip_dir),
        "MMRAG_SHARDS": str(args.shards),
        "MMRAG_MILVUS_URI": milvus_uri,
        "MMRAG_COLLECTION_PREFIX": topics.prefix.rstrip("."),
        "MMRAG_STATE_DIR": str(work / name),
        "MMRAG_INDEX_BACKEND": name,
        "MMRAG_MAX_WAIT_MS": "20",
    }
    module = "consumers.retrieval_worker" if name == "milvus" else "consumers.faiss_worker"
    services = [Service(f"{name}-updater", "index_updater", env, work / "logs")]
    services += [
        Service(f"{name}-{k}", module, {**env, "MMRAG_SHARD": str(k)}, work / "logs") for k in range(args.shards)
    ]
    for s in services:
        s.start()
    try:
        for s in services:
            s.wait_ready(180)
        return drive(Poller(bootstrap, topics, space, args.shards), Producer({"bootstrap.servers": bootstrap}), args)
    finally:
        for s in services:
            s.stop()


def send(poller: Poller, producer: Producer, oid: str, rng: np.random.Generator) -> None:
    """Produces one object's embedding batch and starts waiting for it."""
    space = poller.space
    text = rng.standard_normal(space.text_dim).astype(np.float32)
    batch = EmbeddingBatch(
        object_id=oid,
        version="v1",
        modality=Modality.MODALITY_TEXT,
        model_id=space.text_model_id,
        dim=space.text_dim,
        chunks=[Chunk(index=0, text=oid, vector=text.tolist())],
        event_time_ms=now_ms(),
    )
    producer.produce(poller.topics.embeddings, batch.SerializeToString(), oid)
    producer.flush(5)
    poller.pending[vector_id(oid, "v1", "chunk-0", space.id)] = (space.fuse(text, None), time.monotonic())


def drive(poller: Poller, producer: Producer, args: argparse.Namespace) -> list[float]:
    """After one warm-up object (the first requests meet group rebalances and cold caches), produces objects at the
    rate and polls until each is searchable; the seconds each took, sorted."""
    rng = np.random.default_rng(0)
    send(poller, producer, "bench/warm-up.txt", rng)
    deadline = time.monotonic() + 120
    while poller.pending and time.monotonic() < deadline:
        poller.round()
    poller.found.clear()
    total = int(args.rate * args.seconds)
    began, sent = time.monotonic(), 0
    while len(poller.found) < total and time.monotonic() - began < args.seconds + 60:
        while sent < total and time.monotonic() - began >= sent / args.rate:
            send(poller, producer, f"bench/fresh-{sent}.txt", rng)
            sent += 1
        poller.round()
        time.sleep(0.1)
    missing = total - len(poller.found)
    if missing:
        raise RuntimeError(f"{missing} of {total} objects never became searchable: see the services' logs")
    return sorted(poller.found.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=2.0, help="objects per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--shards", type=int, default=2)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        endpoints = start_infra(work / "infra")
        try:
            clip_dir = write_random_clip(work / "clip", seed=0)
            results = {
                p: run_path(p, endpoints.bootstrap_servers, endpoints.milvus_uri, clip_dir, work, args)
                for p in ("milvus", "faiss")
            }
        finally:
            stop_infra(work / "infra")
    table = Table(title=f"embeddings.v1 -> searchable, {args.rate}/s for {args.seconds:.0f} s, {args.shards} shards")
    for col in ("path", "objects", "p50 s", "p99 s", "max s", "> 1 s"):
        table.add_column(col, justify="right")
    for path, times in results.items():
        t = np.array(times)
        p50, p99 = np.median(t), np.percentile(t, 99)
        table.add_row(path, str(len(t)), f"{p50:.2f}", f"{p99:.2f}", f"{t.max():.2f}", str(int((t > 1).sum())))
    console.print(table)


if __name__ == "__main__":
    main()
