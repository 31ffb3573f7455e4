"""The default stack as it grows (issue 20): the index updater, the retrieval workers and the query service of the
local stack's backend (Faiss shards by default; ``--backend milvus`` for milvus-lite as the local stack starts it)
fed embedding batches straight onto ``embeddings.v1`` (the local S3 takes only ~30-80 puts/s), grown in steps. At
each step size, in one run:

- updater objects/s while ingesting the step's objects as fast as Kafka takes them: the step's objects over the
  time from its first object produced (the updater idle, caught up) to its last INDEXED status produced (the
  status message's timestamp on ``index-status.v1``: statuses go out after the batch's rows are applied), so both
  ends of every step are whole batches;
- freshness: batch produced -> INDEXED status (INDEXED means searchable: Milvus upserts with Strong consistency, on
  Faiss the status waits until every serving shard replica applied the rows) p50/p99 for objects sent one by one
  at half the updater's measured rate;
- on Faiss HNSW shards, the rows still growing (applied, searched exactly, not yet in the graph) when the step's
  objects are indexed, gRPC Search (1 client) right then while the shards build their graphs, and how long until
  the graphs hold every row (``mmrag_faiss_growing_rows`` of each worker at 0);
- gRPC Search p50/p99 (text queries, encoded by the query service; distinct texts: the embedding and result caches
  do not answer) with 1 and 8 clients, once the graphs hold every row;
- the 1-minute load average when the step ends (the box is shared: figures are noisy under load).

Objects are text (3 chunks of 12 random words of the mixed corpus' vocabulary, random vectors) and, every 5th, an
image too.

    uv run --no-sync python -m bench.scale [--steps 1000,10000,100000] [--shards 2] [--backend faiss|milvus]
        [--searches 200] [--fresh 60] [--encoder-backend onnx|torch]

Starts its own Kafka, local S3 and milvus-lite in a temporary directory. Goals: updater rate at the last step >= 0.8x
the first; Search p50 < 25 ms at 100k (1 client); freshness p99 < 3 s.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.query import vocabulary
from local_stack.processes import free_port
from local_stack.stack import Deployment, start_infra, start_services, stop_infra, stop_services
from mmrag.clip import write_random_clip
from mmrag.messages import now_ms
from mmrag.pb import query_pb2, query_pb2_grpc
from mmrag.pb.events_pb2 import Chunk, EmbeddingBatch, IndexState, IndexStatus, Modality
from mmrag.settings import SpaceSettings
from mmrag.space import EmbeddingSpace, space_from_settings
from operator_cli.top_metrics import parse, total

WORDS = vocabulary()  # the mixed corpus' words, as bench.query's (a 31-word list put each query word in a third of
# all chunks: BM25 then scored ~50k postings a word at 100k objects, 2.3 ms a keyword search, 0.4 with these)


SEEDS = itertools.count()  # one seed per Search client per step: seeded by the client's number alone, the later
# steps asked the earlier steps' queries again, and the query service's embedding cache answered them unencoded
WARM_UP = 500  # objects indexed before the first step (not counted: the first step's rate is then a steady one)


@dataclass
class Step:
    size: int
    rate: float = 0.0
    handled_rate: float = 0.0  # over the first to the last indexed_at_ms (when the updater handled the batches)
    fresh: list[float] = field(default_factory=list)
    search: dict[int, list[float]] = field(default_factory=dict)
    load: float = 0.0  # 1-minute load average at the end of the step
    growing: int = 0  # rows applied and not yet in the shards' HNSW graphs when the step's objects were indexed
    building: list[float] = field(default_factory=list)  # Search seconds (1 client) while the graphs were built
    built_s: float = 0.0  # from the step's objects indexed to every graph holding every row
    took_s: float = 0.0  # wall time of the step (ingest, freshness, searches)


class Feeder:
    """Produces embedding batches of numbered objects onto embeddings.v1 and reads their INDEXED statuses."""

    def __init__(self, dep: Deployment, space: EmbeddingSpace) -> None:
        self.space = space
        self.embeddings = f"{dep.topic_prefix}embeddings.v1"
        bootstrap = dep.endpoints.bootstrap_servers
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"})
        self.statuses = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
        status_topic = f"{dep.topic_prefix}index-status.v1"
        partitions = self.statuses.list_topics(status_topic, timeout=10).topics[status_topic].partitions
        self.statuses.assign([TopicPartition(status_topic, p, 0) for p in partitions])
        self.indexed: dict[str, int] = {}  # object id -> indexed_at_ms of its INDEXED status (the last half)
        self.published: dict[str, int] = {}  # object id -> when its INDEXED status was produced (message timestamp)
        self.rng = np.random.default_rng(0)
        self.sent = 0

    def send(self, n: int, bucket: str = "scale") -> str:
        """Object ``n``: its text batch (and, every 5th, its image batch); returns its id."""
        oid, at = f"{bucket}/doc-{n:07d}.txt", now_ms()
        chunks = []
        for i in range(3):
            words = " ".join(self.rng.choice(WORDS, 12))
            vec = self.rng.standard_normal(self.space.text_dim).astype(np.float32)
            chunks.append(Chunk(index=i, text=f"{words} {n}", char_start=i * 80, char_end=i * 80 + 79, vector=vec))
        self._produce(oid, Modality.MODALITY_TEXT, self.space.text_model_id, self.space.text_dim, chunks, at)
        if n % 5 == 0:
            vec = self.rng.standard_normal(self.space.image_dim).astype(np.float32)
            image = [Chunk(index=0, vector=vec)]
            self._produce(oid, Modality.MODALITY_IMAGE, self.space.image_model_id, self.space.image_dim, image, at)
        self.sent += 1
        return oid

    def _produce(self, oid: str, modality: Modality, model: str, dim: int, chunks: list[Chunk], at: int) -> None:
        batch = EmbeddingBatch(
            object_id=oid, version="v1", modality=modality, model_id=model, dim=dim, chunks=chunks, event_time_ms=at
        )
        while True:
            try:
                self.producer.produce(self.embeddings, batch.SerializeToString(), oid)
                return
            except BufferError:
                self.producer.poll(0.1)

    def read_statuses(self, timeout_s: float = 0.2) -> None:
        for msg in self.statuses.consume(5000, timeout_s):
            if msg.error() or not msg.value():
                continue
            status = IndexStatus.FromString(msg.value() or b"")
            if status.state == IndexState.INDEX_STATE_INDEXED:
                self.indexed[status.object_id] = status.indexed_at_ms
                self.published[status.object_id] = msg.timestamp()[1]

    def close(self) -> None:
        self.producer.flush(10)
        self.statuses.close()

    def wait_indexed(self, oids: list[str], timeout_s: float, progress: Progress | None = None) -> None:
        task = progress.add_task("indexed", total=len(oids)) if progress else None
        deadline = time.monotonic() + timeout_s
        while True:
            self.read_statuses()
            done = sum(1 for o in oids if o in self.indexed)
            if progress is not None and task is not None:
                progress.update(task, completed=done)
            if done == len(oids):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(oids) - done} of {len(oids)} objects not indexed in {timeout_s:.0f} s")


def grow(feeder: Feeder, step: Step, progress: Progress) -> None:
    """Ingests objects up to ``step.size`` as fast as Kafka takes them; the updater's objects/s over them."""
    began = now_ms()  # the updater is caught up: the first object's batch is taken as soon as it is produced
    oids = [feeder.send(n) for n in range(feeder.sent, step.size)]
    feeder.producer.flush(60)
    feeder.wait_indexed(oids, timeout_s=max(600, 0.2 * len(oids)), progress=progress)
    step.rate = len(oids) / max(0.001, (max(feeder.published[o] for o in oids) - began) / 1000)
    # Not from the first to the last indexed_at_ms (when a batch is handled, before its rows are applied and its
    # statuses go out): that leaves the first batch's fetch and the last batch's apply and commit out, a large share
    # of a step of a few batches; printed beside it.
    handled = [feeder.indexed[o] for o in oids]
    step.handled_rate = len(oids) / max(0.001, (max(handled) - min(handled)) / 1000)


def freshness(feeder: Feeder, step: Step, count: int) -> None:
    """``count`` objects one by one at half the updater's rate: produced -> INDEXED, seconds."""
    gap = 2 / max(step.rate, 0.5)
    for n in range(count):
        oid = feeder.send(10_000_000 + step.size * 100 + n, bucket="fresh")
        feeder.producer.flush(10)
        sent = now_ms()
        feeder.wait_indexed([oid], timeout_s=120)
        step.fresh.append((feeder.indexed[oid] - sent) / 1000)
        time.sleep(max(0.0, gap - (now_ms() - sent) / 1000))


def growing_rows(metrics_urls: list[str]) -> int:
    """The shards' rows applied and not yet in their graphs (``mmrag_faiss_growing_rows`` summed over workers)."""
    growing = 0.0
    for url in metrics_urls:  # not top_metrics.scrape: a worker that does not answer must fail the bench, not read 0
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
            growing += total(parse(reply.read().decode()), "mmrag_faiss_growing_rows")
    return int(growing)


def graphs_built(metrics_urls: list[str], port: int, step: Step, count: int) -> None:
    """Search (1 client) while the shards build their graphs, then waits until they hold every row."""
    began = time.monotonic()
    step.growing = growing_rows(metrics_urls)
    if step.growing:
        probe = Step(step.size)
        searches(port, probe, count, 1)
        step.building = probe.search[1]
    while growing_rows(metrics_urls):
        if time.monotonic() - began > 3600:
            raise RuntimeError("the shards' graphs still lack rows an hour after the step's objects were indexed")
        time.sleep(1)
    step.built_s = time.monotonic() - began


def searches(port: int, step: Step, count: int, clients: int) -> None:
    """``count`` text Searches per client from ``clients`` clients at once, top 10; seconds each (after 10 Searches
    not counted: the first ones pay for connections and first-use allocations)."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = query_pb2_grpc.QueryServiceStub(channel)
    for n in range(10):
        stub.Search(query_pb2.SearchQuery(text=f"warm up {n}", top_k=10), timeout=30)

    def client(c: int) -> list[float]:
        rng = np.random.default_rng(c)  # c from SEEDS: no query of an earlier step or client is asked again
        took = []
        for _ in range(count):
            text = " ".join(rng.choice(WORDS, 4))  # distinct queries: neither cache answers them
            began = time.perf_counter()
            stub.Search(query_pb2.SearchQuery(text=f"{text} {rng.integers(1 << 30)}", top_k=10), timeout=30)
            took.append(time.perf_counter() - began)
        return took

    with ThreadPoolExecutor(clients) as pool:
        seeds = [next(SEEDS) for _ in range(clients)]
        step.search[clients] = sorted(t for times in pool.map(client, seeds) for t in times)
    channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="1000,10000,100000", help="collection sizes to measure at")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--backend", default=Deployment.index_backend, choices=("milvus", "faiss"))
    parser.add_argument(
        "--encoder-backend", default="onnx", choices=("onnx", "torch"), help="the space's encoders (mmrag stack up's)"
    )
    parser.add_argument("--searches", type=int, default=200, help="Searches per client at each step")
    parser.add_argument("--fresh", type=int, default=60, help="objects sent one by one for freshness per step")
    args = parser.parse_args()
    steps = [Step(int(s)) for s in args.steps.split(",")]
    with tempfile.TemporaryDirectory() as tmp, Progress() as progress:
        work = Path(tmp)
        endpoints = start_infra(work / "infra")
        tag = f"sc{uuid.uuid4().hex[:6]}"
        clip_dir = write_random_clip(work / "clip", seed=0)
        dep = Deployment(
            work / "stack", endpoints, clip_dir, f"{tag}.", f"b-{tag}", f"q-{tag}", args.shards, free_port(),
            index_backend=args.backend, encoder_backend=args.encoder_backend,
        )  # fmt: skip
        try:
            dep.prepare()
            workers = dep.shard_workers()
            metrics_urls = [w.probe_url for w in workers] if args.backend == "faiss" else []
            services = [dep.service("index_updater"), *workers]
            services.append(dep.service("query_service", MMRAG_RESULT_CACHE_TTL_S="0"))
            start_services(services, 300)
            space = SpaceSettings(clip_model_dir=clip_dir, encoder_backend=args.encoder_backend)
            feeder = Feeder(dep, space_from_settings(space))
            try:
                warm = [feeder.send(n, bucket="warm") for n in range(20_000_000, 20_000_000 + WARM_UP)]
                feeder.producer.flush(60)
                feeder.wait_indexed(warm, timeout_s=600)  # consumers fetching, first batches: not in the first step
                for step in steps:
                    began = time.monotonic()
                    grow(feeder, step, progress)
                    freshness(feeder, step, args.fresh)
                    graphs_built(metrics_urls, dep.grpc_port, step, max(20, args.searches // 4))
                    for clients in (1, 8):
                        progress.console.print(f"{step.size} objects: Search, {clients} client(s)")
                        searches(dep.grpc_port, step, max(20, args.searches // clients), clients)
                    step.load, step.took_s = os.getloadavg()[0], time.monotonic() - began
                    progress.console.print(
                        f"{step.size} objects: updater {step.rate:.1f} obj/s ({step.handled_rate:.1f} from the first "
                        f"to the last batch handled), {step.growing} rows growing, graphs "
                        f"built {step.built_s:.0f} s later, step {step.took_s:.0f} s, load {step.load:.1f}"
                    )
            finally:
                feeder.close()
        finally:
            stop_services(dep.state_dir)
            stop_infra(work / "infra")
    print_table(steps, args)


def print_table(steps: list[Step], args: argparse.Namespace) -> None:
    title = f"bench.scale: {args.backend}, {args.shards} shards, {args.encoder_backend} encoders"
    table = Table(title=f"{title}, embeddings.v1 -> updater -> Search")
    cols: tuple[str, ...] = ("objects", "updater obj/s", "x first", "fresh p50 s", "fresh p99 s", "rows growing")
    cols += ("building: search p50 ms", "p99 ms", "built after s")
    cols += ("search p50 ms", "p99 ms", "8 clients p50 ms", "p99 ms", "step s", "load")
    for col in cols:
        table.add_column(col, justify="right")
    first = steps[0].rate or 1.0
    for s in steps:
        fresh = np.array(s.fresh or [np.nan])
        one, eight = np.array(s.search.get(1, [np.nan])) * 1000, np.array(s.search.get(8, [np.nan])) * 1000
        building = np.array(s.building or [np.nan]) * 1000
        table.add_row(
            str(s.size), f"{s.rate:.1f}", f"{s.rate / first:.2f}",
            f"{np.median(fresh):.2f}", f"{np.percentile(fresh, 99):.2f}", str(s.growing),
            f"{np.median(building):.1f}", f"{np.percentile(building, 99):.1f}", f"{s.built_s:.0f}",
            f"{np.median(one):.1f}", f"{np.percentile(one, 99):.1f}",
            f"{np.median(eight):.1f}", f"{np.percentile(eight, 99):.1f}", f"{s.took_s:.0f}", f"{s.load:.1f}",
        )  # fmt: skip
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
