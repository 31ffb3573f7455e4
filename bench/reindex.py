"""Re-index throughput against fresh ingest of the same corpus, in one run, with Search latency while it runs:

- fresh ingest: the corpus put into the bucket -> every object indexed by the live space (S3 notification -> SQS
  bridge -> normalizer -> text and vision embedders -> index updater -> Milvus; every group's lag 0);
- re-index: `mmrag reindex --space b` with another CLIP of the same size (so the same work per object), from its
  processes ready -> every stage caught up (they replay the compacted objects.v1);
- rebuild: space b's collection dropped, then rebuilt from its vectors topic (no models), rows per second;
- Search p50/p99 through the gRPC query service: idle (nothing ingesting) vs during the re-index.

    uv run --no-sync python -m bench.reindex [--images 200] [--shards 2] [--idle-seconds 20]

Starts its own Kafka, local S3 and milvus-lite (local_stack) and the deployables as processes; the updaters write
Milvus and vectors.v1 (MMRAG_INDEX_BACKEND=both, what a rebuild reads). The corpus: the 33 documents of
bench/data/mixed_corpus plus ``--images`` drawn shapes (PNG). The query service's result cache is off, so every
Search reaches the shards; a thread searches without pause through both ingests (same query load on both) and an
idle stretch between them. The live space's processes keep running during the re-index, as in a deployment.
Objects per second are counted by polling every 0.5 s.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
from PIL import Image, ImageDraw

from local_stack.processes import free_port
from local_stack.stack import Deployment, start_infra, start_services, stop_infra, stop_services
from mmrag.clip import write_random_clip
from mmrag.milvus_index import milvus_client
from mmrag.object_store import S3ObjectStore
from mmrag.pb import query_pb2, query_pb2_grpc
from mmrag.settings import SpaceSettings, VectorStoreSettings
from mmrag.space import space_from_settings
from mmrag.topics import Topics
from operator_cli.connection import OperatorSettings
from operator_cli.lag import group_lags
from operator_cli.reindex import caught_up, progress, start_space, stop_space
from producers.upload import upload_files

DOCS = Path(__file__).parent / "data" / "mixed_corpus" / "docs"
LIVE_GROUPS = ("object-normalizer", "embedder-text", "embedder-vision", "index-updater")
QUERIES = [
    "how does a compacted topic keep the latest value",
    "a red circle",
    "why does espresso channel",
    "git bisect finds the commit that broke it",
    "a blue square",
    "negative caching of DNS answers",
]
COLOURS = ["red", "green", "blue", "orange", "purple", "black", "yellow", "teal"]


def write_corpus(root: Path, images: int) -> list[Path]:
    """The documents plus ``images`` shapes (a circle, square or triangle of a colour, at a seeded place)."""
    rng = np.random.default_rng(0)
    files = sorted(DOCS.glob("*.md"))
    root.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        img = Image.new("RGB", (64, 64), "white")
        draw = ImageDraw.Draw(img)
        x, y = (int(v) for v in rng.integers(4, 24, 2))
        colour = COLOURS[i % len(COLOURS)]
        if i % 3 == 0:
            draw.ellipse((x, y, x + 36, y + 36), fill=colour)
        elif i % 3 == 1:
            draw.rectangle((x, y, x + 36, y + 36), fill=colour)
        else:
            draw.polygon([(x, y + 36), (x + 36, y + 36), (x + 18, y)], fill=colour)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        path = root / f"shape-{i:04d}.png"
        path.write_bytes(buf.getvalue())
        files.append(path)
    return files


class Latency:
    """Searches without pause in a thread; when each answer came and how long it took (failures counted)."""

    def __init__(self, port: int) -> None:
        self.stub = query_pb2_grpc.QueryServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        self.samples: list[tuple[float, float]] = []  # (monotonic time of the answer, seconds it took)
        self.failed = 0  # errors and partial answers
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                reply = self.stub.Search(query_pb2.SearchQuery(text=QUERIES[i % len(QUERIES)], top_k=5), timeout=15)
                self.failed += int(reply.partial)
            except grpc.RpcError:
                self.failed += 1
            self.samples.append((time.monotonic(), time.monotonic() - began))
            i += 1
            time.sleep(0.05)

    def between(self, start: float, end: float) -> list[float]:
        return [took for at, took in self.samples if start <= at <= end]


def live_caught_up() -> bool:
    """Every group of the live space (normalizer, embedders, updater) has read everything there is."""
    settings = OperatorSettings()
    lags = {g.group: g.total for g in group_lags(settings)}
    return all(lags.get(settings.topic_prefix + g) == 0 for g in LIVE_GROUPS)


def indexed_objects(collection: str) -> int:
    """Distinct objects with rows in ``collection`` (0 while it does not exist)."""
    store = VectorStoreSettings()
    client = milvus_client(store.milvus_uri)
    try:
        if not client.has_collection(collection):
            return 0
        rows = client.query(collection, filter='id != ""', output_fields=["object_id"], limit=16384)
        return len({r["object_id"] for r in rows})
    finally:
        client.close()


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Polls ``check`` every 0.5 s; the seconds it took. RuntimeError naming ``what`` after ``timeout_s``."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout_s:
            raise RuntimeError(f"{what} not reached in {timeout_s:.0f} s: see the services' logs under the state dir")
        time.sleep(0.5)
    return time.monotonic() - began


def percentile(times: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(times) * 1000, q)) if times else float("nan")


def run(args: argparse.Namespace, work: Path) -> dict[str, float]:
    endpoints = start_infra(work / "infra")
    try:
        clip_a, clip_b = write_random_clip(work / "clip-a", seed=0), write_random_clip(work / "clip-b", seed=1)
        dep = Deployment(
            work / "state", endpoints, clip_a, topic_prefix="bench.", bucket="bench-reindex", queue="bench-reindex",
            shards=args.shards, grpc_port=free_port(), index_backend="both",
        )  # fmt: skip
        dep.prepare()
        os.environ.update(dep.env())
        names = ("sqs_bridge", "normalizer", "text_embedder", "vision_embedder", "index_updater")
        workers = [dep.service("retrieval_worker", str(k), MMRAG_SHARD=str(k)) for k in range(args.shards)]
        query = dep.service("query_service", MMRAG_RESULT_CACHE_TTL_S="0")
        start_services([*(dep.service(n) for n in names), *workers, query], 300)
        latency = Latency(dep.grpc_port)
        latency.thread.start()
        files = write_corpus(work / "corpus", args.images)
        fresh = ingest_fresh(dep, files)
        time.sleep(args.idle_seconds)
        idle = latency.between(fresh[1] + 2, time.monotonic())
        during = reindex_b(clip_b)
        latency.stop.set()
        figures = {"objects": len(files), "fresh_s": fresh[1] - fresh[0], "reindex_s": during[1] - during[0]}
        figures |= rebuild_rate(dep, clip_b)
        for name, times in (("fresh", latency.between(*fresh)), ("idle", idle), ("during", latency.between(*during))):
            figures |= {f"{name}_p50": percentile(times, 50), f"{name}_p99": percentile(times, 99)}
            figures[f"{name}_n"] = len(times)
        figures["failed"] = latency.failed
        return figures
    finally:
        stop_services(work / "state")
        stop_infra(work / "infra")


def ingest_fresh(dep: Deployment, files: list[Path]) -> tuple[float, float]:
    """Uploads the corpus; (start, end) of upload -> every object indexed by the live space."""
    store = S3ObjectStore(dep.s3_settings(), "bench")
    collection = VectorStoreSettings().collection_for(space_from_settings(SpaceSettings()).id)
    began = time.monotonic()
    upload_files(store, dep.bucket, files, prefix="c")
    took = wait_until(lambda: indexed_objects(collection) >= len(files) and live_caught_up(), 1800, "fresh ingest")
    return began, began + took


def reindex_b(clip_b: Path) -> tuple[float, float]:
    """Re-indexes into space b with ``clip_b``; (start, end) from its processes ready to every stage caught up."""
    services = start_space("b", {"MMRAG_CLIP_MODEL_DIR": str(clip_b), "MMRAG_INDEX_BACKEND": "both"})
    try:
        for service in services:
            service.wait_ready(300)
        began = time.monotonic()
        return began, began + wait_until(lambda: caught_up(progress("b")), 1800, "re-index caught up")
    finally:
        stop_space("b")


def rebuild_rate(dep: Deployment, clip_b: Path) -> dict[str, float]:
    """Drops space b's collection and rebuilds it from its vectors topic: rows and seconds."""
    from index_updater.rebuild import rebuild_from_vectors

    store = VectorStoreSettings()
    space_b = space_from_settings(SpaceSettings(clip_model_dir=clip_b))
    client = milvus_client(store.milvus_uri)
    client.drop_collection(store.collection_for(space_b.id, "b"))
    client.close()
    began = time.monotonic()
    rebuilt = rebuild_from_vectors(
        dep.endpoints.bootstrap_servers, Topics(dep.topic_prefix, "b"), store, "b", SpaceSettings(clip_model_dir=clip_b)
    )
    return {"rebuild_rows": rebuilt.rows, "rebuild_s": time.monotonic() - began}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200, help="drawn shapes beside the 33 documents")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="Search latency measured this long idle")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        f = run(args, Path(tmp))
    n = f["objects"]
    fresh, reindex = n / f["fresh_s"], n / f["reindex_s"]
    print(f"corpus: {n:.0f} objects (33 documents + {args.images} images), {args.shards} shards")
    print(f"fresh ingest (upload -> indexed): {f['fresh_s']:.1f} s = {fresh:.2f} objects/s")
    print(f"re-index (processes ready -> caught up): {f['reindex_s']:.1f} s = {reindex:.2f} objects/s")
    print(f"re-index / fresh ingest: {reindex / fresh:.2f} (target >= 0.9)")
    rate = f["rebuild_rows"] / f["rebuild_s"]
    print(f"rebuild from vectors.v1: {f['rebuild_rows']:.0f} rows in {f['rebuild_s']:.2f} s = {rate:.0f} rows/s")
    for name, what in (("idle", "idle"), ("during", "during the re-index"), ("fresh", "during fresh ingest")):
        print(
            f"Search latency {what}: p50 {f[f'{name}_p50']:.1f} ms, p99 {f[f'{name}_p99']:.1f} ms "
            f"({f[f'{name}_n']:.0f} queries)"
        )
    print(f"Search calls failed or partial: {f['failed']:.0f}")


if __name__ == "__main__":
    main()
