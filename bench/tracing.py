"""Tracing overhead: the same work with span export off and on (OTLP to a real Jaeger), in one run on one stack.

    uv run --frozen --no-sync python -m bench.tracing [--objects 20000] [--queries 200] [--texts 160] [--rounds 2]

Starts Kafka, local S3, milvus-lite and Jaeger (local_stack). Search: ``--objects`` rows written onto vectors.v1 as
bench.query writes them, Faiss retrieval workers (one per shard) and the query service started once without an
OTLP endpoint and once with one, each time warmed up, then ``--queries`` gRPC Searches timed (distinct queries, so
the 5 s result cache does not answer). Embedders: ``--texts`` text objects through the text embedder process, as
bench.embedders runs them, once per mode. Modes alternate over ``--rounds`` (off, on, on, off, ...) so drift of the
shared machine's load falls on both. Prints p50/p99 and CPU ms per search, text objects/s, and on/off ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from bench.embedders import end_to_end, synthetic_texts, upload
from bench.query import GrpcSearch, broker_pids, fill_vector_log, index_rows, stats, timed, vocabulary
from index_updater.handler import IndexUpdaterSettings
from local_stack.observability import start_jaeger
from local_stack.processes import free_port, stop_detached
from local_stack.stack import Deployment, Endpoints, start_infra, start_services, stop_infra, stop_services
from mmrag.clip import write_random_clip
from mmrag.pb.events_pb2 import MediaKind
from mmrag.space import space_from_settings
from mmrag.topics import Topics


def modes(rounds: int) -> list[bool]:
    """Export off/on in ABBA order: off, on, on, off, ..."""
    return [bool((i + i // 2) % 2) for i in range(2 * rounds)]


def search_phase(
    dep: Deployment, otel: dict[str, str], texts: list[str], warm: list[str]
) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, CPU ms per search of the stack's processes) of gRPC Searches with the services' ``otel``."""
    extra = {**otel, "MMRAG_INDEX_BACKEND": "faiss"}
    services = start_services([*dep.shard_workers(**extra), dep.service("query_service", **extra)], 1800)
    try:
        pids = {s.name: s.pid for s in services if s.pid}
        pids.update({f"broker-{n}": pid for n, pid in enumerate(broker_pids(dep.state_dir))})
        search = GrpcSearch(dep.grpc_port, 10)
        timed(search, warm, {})
        measured = timed(search, texts, pids)
        p50, p99 = stats(measured.times)
        return p50, p99, 1000 * measured.cpu_s / len(measured.times)
    finally:
        stop_services(dep.state_dir)


def bench_deployment(work: Path, endpoints: Endpoints) -> Deployment:
    dep = Deployment(
        work / "state",  # infra and services in one state dir, as bench.embedders' end_to_end expects
        endpoints,
        write_random_clip(work / "clip", seed=0),
        topic_prefix=f"bt{uuid.uuid4().hex[:6]}.",
        bucket="bench-tracing",
        queue="bench-tracing",
        grpc_port=free_port(),
        index_backend="faiss",
    )
    dep.prepare()
    return dep


def run(args: argparse.Namespace, work: Path) -> None:
    endpoints = start_infra(work / "state")
    otlp_http, _, jaeger_url = start_jaeger(work / "state")
    exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_http, "OTEL_BSP_SCHEDULE_DELAY": "500"}
    print(f"Jaeger {jaeger_url}, OTLP {otlp_http}", flush=True)
    dep = bench_deployment(work, endpoints)
    settings = IndexUpdaterSettings(clip_model_dir=dep.clip_model_dir, shards=dep.shards)
    space = space_from_settings(settings)
    words = vocabulary()
    fill_vector_log(
        endpoints.bootstrap_servers,
        Topics(dep.topic_prefix).vectors,
        space,
        index_rows(args.objects, space, dep.shards, words),
    )
    rng = np.random.default_rng(2)
    keys = upload(dep, "txt", synthetic_texts(args.texts), ".txt")
    results: dict[bool, dict[str, list[float]]] = {False: {}, True: {}}
    for on in modes(args.rounds):
        texts = [" ".join(rng.choice(words, 6)) for _ in range(args.queries)]
        warm = [" ".join(rng.choice(words, 6)) for _ in range(args.queries // 4)]
        p50, p99, cpu = search_phase(dep, exporting if on else {}, texts, warm)
        rate = end_to_end(dep, "text_embedder", keys, MediaKind.MEDIA_KIND_TEXT, exporting if on else {})
        for name, value in (("p50", p50), ("p99", p99), ("cpu", cpu), ("text/s", rate)):
            results[on].setdefault(name, []).append(value)
        print(
            f"export {'on ' if on else 'off'}: search p50 {p50:.1f} ms, p99 {p99:.1f} ms, {cpu:.1f} CPU ms/search; "
            f"text embedder {rate:.1f} objects/s",
            flush=True,
        )
    report(results, args)


def report(results: dict[bool, dict[str, list[float]]], args: argparse.Namespace) -> None:
    sizes = f"{args.objects:,} rows, {args.queries} searches, {args.texts} texts"
    print(f"\nmedians over {args.rounds} rounds each ({sizes}):")
    for name, unit in (("p50", "ms"), ("p99", "ms"), ("cpu", "CPU ms/search"), ("text/s", "objects/s")):
        off, on = statistics.median(results[False][name]), statistics.median(results[True][name])
        print(f"  {name:7s} off {off:8.1f}  on {on:8.1f} {unit:14s} on/off {on / off:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--texts", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            run(args, work)
        finally:
            stop_detached(work / "state" / "jaeger.json")
            stop_infra(work / "state")


if __name__ == "__main__":
    began = time.monotonic()
    main()
    print(f"bench.tracing took {time.monotonic() - began:.0f} s")
