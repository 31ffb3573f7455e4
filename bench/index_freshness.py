"""Freshness on both paths, p50 and p99 at a steady rate below capacity, Milvus (updater -> Milvus <- retrieval
workers) and Faiss (updater -> vectors.v1 -> Faiss workers), one after the other, each on its own topics:

- index: an embedding batch produced onto embeddings.v1 -> searchable through search.requests.v1 (the updater and
  the workers only);
- upload: a text object put into the bucket -> returned by the query service's Search (the whole local stack of
  that backend: S3 notification -> SQS bridge -> normalizer -> text embedder -> updater -> workers -> gRPC).

    uv run --no-sync python -m bench.index_freshness [--rate 2] [--seconds 30] [--upload-rate 1]
        [--upload-seconds 30] [--shards 2] [--stages index,upload]

Starts its own Kafka, local S3 and milvus-lite (local_stack) and the deployables as processes, with their default
settings, except the query service's result cache (off: a repeated query would be answered from it for
MMRAG_RESULT_CACHE_TTL_S, 5 s, and hide a new object that long). Index stage: each batch carries one random vector;
a poller asks every shard for each object not found yet (top 1, its own vector as the query). Upload stage: a Search
for each object not found yet, filtered to its id. Both poll every ~100 ms, so times include up to one polling
round (~100 ms plus a round trip). One warm-up object first (the first requests meet group rebalances).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from local_stack.processes import free_port
from local_stack.services import Service
from local_stack.stack import Deployment, Endpoints, start_infra, start_services, stop_infra, stop_services
from mmrag.clip import write_random_clip
from mmrag.ids import vector_id
from mmrag.messages import now_ms
from mmrag.object_store import S3ObjectStore
from mmrag.pb import query_pb2, query_pb2_grpc
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
        self.batches = Producer({"bootstrap.servers": bootstrap})
        self.rng = np.random.default_rng(0)

    def send(self, oid: str) -> None:
        """Produces one object's embedding batch (one random text vector) and starts waiting for it."""
        space = self.space
        text = self.rng.standard_normal(space.text_dim).astype(np.float32)
        batch = EmbeddingBatch(
            object_id=oid,
            version="v1",
            modality=Modality.MODALITY_TEXT,
            model_id=space.text_model_id,
            dim=space.text_dim,
            chunks=[Chunk(index=0, text=oid, vector=text.tolist())],
            event_time_ms=now_ms(),
        )
        self.batches.produce(self.topics.embeddings, batch.SerializeToString(), oid)
        self.batches.flush(5)
        self.pending[vector_id(oid, "v1", "chunk-0", space.id)] = (space.fuse(text, None), time.monotonic())

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
        return drive(Poller(bootstrap, topics, space, args.shards), args.rate, args.seconds)
    finally:
        for s in services:
            s.stop()


class UploadProbe:
    """Puts text objects into the bucket and asks the query service's Search for each one not found yet."""

    QUERY = "freshness probe of the upload path"

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.store = S3ObjectStore(dep.s3_settings(), "bench")
        self.stub = query_pb2_grpc.QueryServiceStub(grpc.insecure_channel(f"127.0.0.1:{dep.grpc_port}"))
        self.pending: dict[str, float] = {}  # object id -> put at
        self.found: dict[str, float] = {}  # object id -> seconds from put to returned by Search

    def send(self, name: str) -> None:
        key = name.replace("bench/", "fresh/")
        at = time.monotonic()
        self.store.put(self.dep.bucket, key, f"{self.QUERY}: object {key}.".encode(), "text/plain")
        self.pending[f"{self.dep.bucket}/{key}"] = at

    def round(self) -> None:
        for oid in list(self.pending):
            query = query_pb2.SearchQuery(text=self.QUERY, top_k=1, filter=query_pb2.Filter(object_ids=[oid]))
            try:
                reply = self.stub.Search(query, timeout=5)
            except grpc.RpcError:
                continue  # not serving yet (warm-up): asked again next round
            if not reply.partial and any(r.object_id == oid for r in reply.results):
                self.found[oid] = time.monotonic() - self.pending.pop(oid)


def upload_path(name: str, endpoints: Endpoints, clip_dir: Path, work: Path, args: argparse.Namespace) -> list[float]:
    """The whole local stack of backend ``name`` on its own topics and bucket; upload -> Search times, sorted."""
    tag = f"up{uuid.uuid4().hex[:6]}"
    dep = Deployment(
        work / f"upload-{name}",
        endpoints,
        clip_dir,
        topic_prefix=f"{tag}.",
        bucket=f"fresh-{tag}",
        queue=f"fresh-{tag}",
        shards=args.shards,
        grpc_port=free_port(),
        index_backend=name,  # type: ignore[arg-type]
    )
    dep.prepare()
    names = ("sqs_bridge", "normalizer", "text_embedder", "index_updater")
    services = [dep.service(n) for n in names] + dep.shard_workers()
    services.append(dep.service("query_service", MMRAG_RESULT_CACHE_TTL_S="0"))
    try:
        start_services(services, 300)
        return drive(UploadProbe(dep), args.upload_rate, args.upload_seconds)
    finally:
        stop_services(dep.state_dir)


def drive(probe: Poller | UploadProbe, rate: float, seconds: float) -> list[float]:
    """After one warm-up object (the first requests meet group rebalances and cold caches), sends objects at
    ``rate`` per second for ``seconds`` and polls until each is searchable; the seconds each took, sorted."""
    probe.send("bench/warm-up.txt")
    deadline = time.monotonic() + 180
    while probe.pending and time.monotonic() < deadline:
        probe.round()
        time.sleep(0.1)
    probe.found.clear()
    total = int(rate * seconds)
    began, sent = time.monotonic(), 0
    while len(probe.found) < total and time.monotonic() - began < seconds + 60:
        while sent < total and time.monotonic() - began >= sent / rate:
            probe.send(f"bench/fresh-{sent}.txt")
            sent += 1
        probe.round()
        time.sleep(0.1)
    missing = total - len(probe.found)
    if missing:
        raise RuntimeError(f"{missing} of {total} objects never became searchable: see the services' logs")
    return sorted(probe.found.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=2.0, help="index stage: embedding batches per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="index stage: how long")
    parser.add_argument("--upload-rate", type=float, default=1.0, help="upload stage: objects put per second")
    parser.add_argument("--upload-seconds", type=float, default=30.0, help="upload stage: how long")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--stages", default="index,upload", help="comma-separated: index, upload")
    args = parser.parse_args()
    stages = [stage.strip() for stage in args.stages.split(",") if stage.strip()]
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        endpoints = start_infra(work / "infra")
        try:
            clip_dir = write_random_clip(work / "clip", seed=0)
            for path in ("milvus", "faiss"):
                if "index" in stages:
                    results["index", path] = run_path(
                        path, endpoints.bootstrap_servers, endpoints.milvus_uri, clip_dir, work, args
                    )
                if "upload" in stages:
                    results["upload", path] = upload_path(path, endpoints, clip_dir, work, args)
        finally:
            stop_infra(work / "infra")
    print_table(results, args)


def print_table(results: dict[tuple[str, str], list[float]], args: argparse.Namespace) -> None:
    table = Table(
        title=f"freshness, {args.shards} shards: index = embeddings.v1 -> searchable at {args.rate}/s for "
        f"{args.seconds:.0f} s; upload = bucket put -> Search at {args.upload_rate}/s for {args.upload_seconds:.0f} s"
    )
    for col in ("stage", "path", "objects", "p50 s", "p99 s", "max s", "> 1 s"):
        table.add_column(col, justify="right")
    for (stage, path), times in results.items():
        t = np.array(times)
        p50, p99 = np.median(t), np.percentile(t, 99)
        table.add_row(stage, path, str(len(t)), f"{p50:.2f}", f"{p99:.2f}", f"{t.max():.2f}", str(int((t > 1).sum())))
    Console().print(table)


if __name__ == "__main__":
    main()
