"""Search latency at scale: gRPC Search through the real query service, Kafka and the retrieval workers, against the
same search in process, in one run over one index.

    uv run --frozen --no-sync python -m bench.query [--objects 100000] [--shards 2] [--queries 200] [--top-k 10]
        [--backend faiss|milvus]

Starts its own Kafka, local S3 and milvus-lite (local_stack), writes ``--objects`` objects straight into the index
(one text chunk each: a random MiniLM-half vector and 8-40 words of the mixed corpus' vocabulary, the rows the index
updater would write): Faiss (default) as records on vectors.v1, the log its workers materialize; Milvus into the
space's collection (space spec kept on it, as the updater makes it). Then one retrieval worker per shard of that
backend and the query service start with their default settings (modality fusion, keyword search, result cache
5 s). Queries are 6 random words of that vocabulary, distinct per phase (the 5 s result cache answers only in the
cache phase); every text is encoded once beforehand, so query encoding is an embedding-cache hit everywhere and the
rows compare the search itself:

- in process: the query service's request, each shard's answer by the retrieval worker's ``answer_into`` over an
  index of the same rows in this process (Faiss: built here the way a worker builds it, same thread settings;
  Milvus: the same collection) with its keyword index, shards one after the other, the merge and the fusion;
- Kafka: the query service's ``ShardedSearch`` in this process over search.requests.v1 / search.replies.v1 (its own
  reply partition), no gRPC;
- gRPC Search at 1 and 8 concurrent clients; and a cache hit: the same query asked again at once (from_cache).

"CPU ms/search": the CPU time this process and the stack's processes (workers, query service, broker) used during a
phase, per search: the work a search costs, which other load on the machine inflates far less than its latency.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np
from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table

from bench.query_permissions import permissions_phase, readers_of
from consumers.retrieval_worker.handler import answer_into
from consumers.retrieval_worker.keyword import KeywordShard
from index_updater.handler import IndexUpdaterSettings
from local_stack.processes import free_port
from local_stack.stack import Deployment, start_infra, start_services, stop_infra, stop_services
from mmrag.clip import write_random_clip
from mmrag.faiss_halves import index_for
from mmrag.faiss_index import FaissSettings
from mmrag.ids import shard_for, vector_id
from mmrag.kafka_clients import make_producer
from mmrag.milvus_index import MilvusIndex
from mmrag.pb import query_pb2, query_pb2_grpc
from mmrag.pb.events_pb2 import SearchReply
from mmrag.request_reply import FAST_PRODUCER
from mmrag.settings import SpaceSettings
from mmrag.space import EmbeddingSpace, space_clip_encoder, space_from_settings, space_minilm_encoder
from mmrag.space_catalog import SpaceSpec, spec_properties
from mmrag.topics import Topics
from mmrag.vector_index import IndexSearcher, VectorRow
from mmrag.vector_log import OBJECT_ID_HEADER, to_record
from query_service.caches import EmbeddingCache
from query_service.filters import Scope
from query_service.fusion import TEXT, ModalityFusion
from query_service.query_encoder import QueryEncoder
from query_service.reply_client import RequestReplyClient, Route
from query_service.search import ShardedSearch, list_replies, outcome_of, search_request

CORPUS = Path(__file__).resolve().parent / "data" / "mixed_corpus" / "docs"
BATCH = 2000
TIMEOUT_S = 10.0
HIT = "gRPC Search, result-cache hit"
INPROC, KAFKA, GRPC = "in process (no Kafka, no gRPC)", "Kafka request-reply, no gRPC", "gRPC Search, 1 client"
EIGHT = "gRPC Search, 8 clients"


def vocabulary() -> list[str]:
    words = {w.lower() for p in sorted(CORPUS.glob("*.md")) for w in re.findall(r"[A-Za-z]{3,}", p.read_text())}
    return sorted(words)


def index_rows(objects: int, space: EmbeddingSpace, shards: int, words: list[str]) -> list[VectorRow]:
    """``objects`` one-chunk text objects as the index updater would place them."""
    rng = np.random.default_rng(0)
    rows = []
    for n in range(objects):
        oid = f"bench/doc-{n:06d}.txt"
        text = " ".join(rng.choice(words, int(rng.integers(8, 41))))  # lengths vary: fewer BM25 ties
        vector = space.fuse(rng.standard_normal(space.text_dim).astype(np.float32), None)
        row = VectorRow(vector_id(oid, "v1", "chunk-0", space.id), oid, "v1", 0, shard_for(oid, shards), vector, text)
        rows.append(
            replace(row, char_end=len(text), has_text=True, event_time_ms=1, indexed_at_ms=1, content_type="text/plain")
        )
        rows[-1] = replace(rows[-1], readers=readers_of(n))
    return rows


def fill_milvus(settings: IndexUpdaterSettings, space: EmbeddingSpace, rows: list[VectorRow]) -> MilvusIndex:
    """The space's collection (spec kept on it, as the updater makes it) holding ``rows``."""
    spec = SpaceSpec.of(settings, space, "", settings.collection_for(space.id))
    index = MilvusIndex.for_space(settings, space, "", spec_properties(spec))
    index.start()
    for first in range(0, len(rows), BATCH):
        index.upsert(rows[first : first + BATCH])
    return index


def fill_vector_log(bootstrap: str, topic: str, space: EmbeddingSpace, rows: list[VectorRow]) -> None:
    """``rows`` on vectors.v1 as the updater writes them (key vector id, partition = shard)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "compression.type": "lz4"})
    for row in rows:
        value = to_record(row, space.id).SerializeToString()
        producer.produce(topic, value, row.vector_id, partition=row.shard, headers={OBJECT_ID_HEADER: row.object_id})
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("vectors.v1 refused records: see the broker's log")


def local_indexes(
    rows: list[VectorRow], space: EmbeddingSpace, shards: int, milvus: MilvusIndex | None
) -> list[IndexSearcher]:
    """The index each shard's in-process search reads: the Milvus collection, or a Faiss index per shard built
    like a worker's (same settings: HNSW above the threshold)."""
    if milvus is not None:
        return [milvus] * shards
    indexes = [index_for(space.dim, space.text_dim, FaissSettings()) for _ in range(shards)]
    for k, index in enumerate(indexes):
        index.start()  # the worker's thread settings
        index.upsert([r for r in rows if r.shard == k])
    return list(indexes)


@dataclass
class InProcess:
    """The whole search in this process: requests, each shard's worker search, merge and fusion."""

    encoder: QueryEncoder
    fusion: ModalityFusion
    shards: list[tuple[IndexSearcher, KeywordShard]]
    space_id: str
    top_k: int

    def search(self, text: str) -> list[str]:
        vector = self.encoder.encode(text, b"")
        request = search_request(self.fusion, vector, text, True, self.top_k, self.space_id, Scope())
        replies = []
        for k, (index, keywords) in enumerate(self.shards):
            replies.append(SearchReply(shard=k, space_id=self.space_id))
            answer_into(replies[-1], index, keywords, request, k, 100)
        by_list = list_replies(request, replies)
        outcome = outcome_of(by_list, self.fusion, vector, self.top_k, raw_chunks=False, shards=len(self.shards))
        return [h.hit.object_id for h in outcome.hits]


@dataclass(frozen=True)
class Measured:
    times: list[float]  # ms per search
    wall_s: float
    cpu_by: dict[str, float]  # CPU seconds used meanwhile by this process ("bench") and each of the stack's

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu_by.values())


def cpu_seconds(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process and each named pid: a search's cost, which the
    machine's load does not inflate the way it inflates wall time."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {"bench": time.process_time()}
    for name, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        found[name] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return found


def timed(search: Callable[[str], object], texts: Sequence[str], pids: Mapping[str, int], clients: int = 1) -> Measured:
    """Milliseconds of each search (``clients`` at a time), the wall seconds and the CPU seconds of them all."""

    def one(text: str) -> float:
        began = time.perf_counter()
        search(text)
        return (time.perf_counter() - began) * 1000

    began, cpu = time.perf_counter(), cpu_seconds(pids)
    with ThreadPoolExecutor(clients) as pool:
        times = list(pool.map(one, texts))
    after = cpu_seconds(pids)
    return Measured(times, time.perf_counter() - began, {name: after[name] - cpu[name] for name in after})


def broker_pids(infra_dir: Path) -> list[int]:
    """The Kafka broker(s) started under ``infra_dir``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "kafka.Kafka" in cmdline and str(infra_dir) in cmdline:
            found.append(int(proc.name))
    return found


class GrpcSearch:
    """Search through the query service; counts answers that were partial or from the cache."""

    def __init__(self, port: int, top_k: int) -> None:
        self.stub = query_pb2_grpc.QueryServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        self.top_k = top_k
        self.partial = self.cached = 0
        self._lock = threading.Lock()

    def __call__(self, text: str) -> list[str]:
        reply = self.stub.Search(query_pb2.SearchQuery(text=text, top_k=self.top_k), timeout=TIMEOUT_S)
        with self._lock:
            self.partial += reply.partial
            self.cached += reply.from_cache
        return [r.object_id for r in reply.results]


def kafka_search(
    dep: Deployment, encoder: QueryEncoder, fusion: ModalityFusion, space: EmbeddingSpace, top_k: int
) -> tuple[Callable[[str], list[str]], Callable[[], None]]:
    """ShardedSearch in this process on reply partition 1 (the query service owns 0); returns search and close."""
    t = dep.env()
    topics_prefix = t["MMRAG_TOPIC_PREFIX"]
    requests, replies_topic = f"{topics_prefix}search.requests.v1", f"{topics_prefix}search.replies.v1"
    replies = RequestReplyClient(t["MMRAG_BOOTSTRAP_SERVERS"], {replies_topic: SearchReply}, 1, "bench-query")
    replies.start()
    producer = make_producer(t["MMRAG_BOOTSTRAP_SERVERS"], None, **FAST_PRODUCER)
    sharded = ShardedSearch(Route(producer, requests, replies_topic, replies), space.id, dep.shards, fusion, None, True)

    def search(text: str, scope: Scope = Scope()) -> list[str]:  # noqa: B008 - a frozen dataclass
        outcome = sharded.search(encoder.encode(text, b""), top_k, TIMEOUT_S, text, scope)
        if outcome.partial:
            raise RuntimeError(f"Kafka search partial: shards {outcome.missing_shards} missing ({outcome.errors})")
        return [h.hit.object_id for h in outcome.hits]

    def close() -> None:
        producer.flush(10)  # the last request's delivery report
        replies.close()

    return search, close


def stats(times: Sequence[float]) -> tuple[float, float]:
    return statistics.median(times), float(np.percentile(times, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--queries", type=int, default=200, help="searches per phase (x4 at 8 clients)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--backend", choices=("faiss", "milvus"), default="faiss", help="the retrieval workers' index")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        endpoints = start_infra(work / "infra")
        try:
            run(
                args,
                Deployment(
                    work / "stack",
                    endpoints,
                    write_random_clip(work / "clip", seed=0),
                    topic_prefix=f"bq{uuid.uuid4().hex[:6]}.",
                    bucket="bench-query",
                    queue="bench-query",
                    shards=args.shards,
                    grpc_port=free_port(),
                    index_backend=args.backend,
                ),
            )
        finally:
            stop_infra(work / "infra")


def run(args: argparse.Namespace, dep: Deployment) -> None:
    dep.prepare()
    env = dep.env()
    settings = IndexUpdaterSettings(
        milvus_uri=env["MMRAG_MILVUS_URI"],
        collection_prefix=env["MMRAG_COLLECTION_PREFIX"],
        clip_model_dir=dep.clip_model_dir,
        shards=args.shards,
    )
    space = space_from_settings(settings)
    words = vocabulary()
    began = time.monotonic()
    rows = index_rows(args.objects, space, args.shards, words)
    milvus = fill_milvus(settings, space, rows) if args.backend == "milvus" else None
    if milvus is None:
        fill_vector_log(dep.endpoints.bootstrap_servers, Topics(dep.topic_prefix).vectors, space, rows)
    print(f"wrote {len(rows):,} rows ({args.backend}) in {time.monotonic() - began:.0f} s", flush=True)
    try:
        services = start_services([*dep.shard_workers(), dep.service("query_service")], 1800)
        print(f"services ready {time.monotonic() - began:.0f} s after the first row", flush=True)
        pids = {s.name: s.pid for s in services if s.pid}
        pids.update({f"broker-{n}": pid for n, pid in enumerate(broker_pids(dep.state_dir.parent / "infra"))})
        measure(args, dep, space, local_indexes(rows, space, args.shards, milvus), rows, words, pids)
    finally:
        stop_services(dep.state_dir)


def measure(
    args: argparse.Namespace,
    dep: Deployment,
    space: EmbeddingSpace,
    indexes: list[IndexSearcher],
    rows: list[VectorRow],
    words: list[str],
    pids: dict[str, int],
) -> None:
    rng = np.random.default_rng(1)
    n = args.queries
    phases = {
        name: [" ".join(rng.choice(words, 6)) for _ in range(size)]
        for name, size in (("1", n), ("8", 4 * n), ("inproc", n), ("kafka", n), ("hit", n))
    }
    settings = SpaceSettings(clip_model_dir=dep.clip_model_dir)  # backend and precision from MMRAG_* as deployed
    clip, minilm = space_clip_encoder(settings), space_minilm_encoder(settings)
    encoder = QueryEncoder(space, minilm, clip, EmbeddingCache(1 << 15))
    encoder.warm_up()
    fusion = ModalityFusion(space.text_dim, space.image_weight, encoder.clip_sentences)
    grpc_search = GrpcSearch(dep.grpc_port, args.top_k)
    keyword_shards = [KeywordShard(index, k, refresh_s=0) for k, index in enumerate(indexes)]
    for shard in keyword_shards:
        shard.refresh()
    local = InProcess(encoder, fusion, list(zip(indexes, keyword_shards, strict=True)), space.id, args.top_k)
    kafka, close_kafka = kafka_search(dep, encoder, fusion, space, args.top_k)
    perm = [" ".join(rng.choice(words, 6)) for _ in range(n // 2)]
    every = [t for texts in phases.values() for t in texts]
    print(f"warming up: {len(every)} queries through gRPC, {2 * n} in process, {n // 4} over Kafka", flush=True)
    timed(grpc_search, every, {}, 4)  # warm-up: the service's embedding cache, group joins, page caches
    timed(local.search, phases["inproc"] + phases["kafka"], {})  # this process' embedding and sentence caches
    timed(kafka, phases["kafka"][: n // 4], {})
    time.sleep(6)  # the warm-up's answers leave the 5 s result cache
    grpc_search.partial = grpc_search.cached = 0
    results = {
        INPROC: timed(local.search, phases["inproc"], pids),
        KAFKA: timed(kafka, phases["kafka"], pids),
        GRPC: timed(grpc_search, phases["1"], pids),
        EIGHT: timed(grpc_search, phases["8"], pids, 8),
    }
    uncached = grpc_search.cached
    same = sum(set(local.search(t)) == set(grpc_search(t)) for t in phases["inproc"][:20])
    for text in phases["hit"]:
        grpc_search(text)
    grpc_search.cached = 0
    results[HIT] = timed(grpc_search, phases["hit"], pids)
    report(args, results, uncached, grpc_search, same)
    encoded = [encoder.encode(t, b"") for t in perm]  # into the embedding cache: the phase times search, not MiniLM
    vectors = [fusion.queries(v)[TEXT] for v in encoded[:50]]
    permissions_phase(kafka, lambda f, texts: timed(f, texts, {}).times, perm, vectors, indexes, rows, args.top_k)
    close_kafka()


def report(
    args: argparse.Namespace, results: dict[str, Measured], uncached: int, grpc_search: GrpcSearch, same: int
) -> None:
    title = f"Search over {args.objects:,} objects ({args.backend}), {args.shards} shards, top_k {args.top_k}"
    table = Table(title=title)
    for col in ("path", "searches", "p50 ms", "p99 ms", "per s", "CPU ms/search"):
        table.add_column(col, justify="right")
    for name, m in results.items():
        p50, p99 = stats(m.times)
        n = len(m.times)
        table.add_row(name, str(n), f"{p50:.1f}", f"{p99:.1f}", f"{n / m.wall_s:.0f}", f"{1000 * m.cpu_s / n:.1f}")
    Console().print(table)
    busy = results[EIGHT]
    shares = ", ".join(f"{name} {1000 * s / len(busy.times):.1f}" for name, s in sorted(busy.cpu_by.items()))
    print(f"CPU ms a search by process at 8 clients (bench = the clients): {shares}")
    base = stats(results[INPROC].times)[0]
    for name in (KAFKA, GRPC):
        p50 = stats(results[name].times)[0]
        print(f"{name}: p50 {p50 - base:+.1f} ms over in process ({p50 / base:.2f}x)")
    print(
        f"partial answers: {grpc_search.partial}; uncached phases answered from the cache: {uncached}; "
        f"cache phase answered from the cache: {grpc_search.cached}/{len(results[HIT].times)}; "
        f"same top-{args.top_k} objects in process and through gRPC: {same}/20; load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
