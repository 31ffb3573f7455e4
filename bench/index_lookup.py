"""An object's rows and the updater's rate against the collection's size (issue 20), on milvus-lite as the local
stack starts it (2 MiB memtable):

- ``rows_of`` as the updater reads it now (the object's manifest, then its rows, both by primary key) against the
  ``object_id == ...`` filter it used before (``_scan_rows``, Strong like before), on the same collection and the
  same objects, median and p90 ms; both answers are checked to be equal;
- the updater's objects/s (``IndexUpdater.handle``, one object per call: read its rows, fuse, upsert, delete)
  overwriting existing objects with a new version, with each of the two reads.

    uv run --no-sync python -m bench.index_lookup [--sizes 2000,20000,60000] [--dim 64] [--chunks 3]
        [--lookups 60] [--updates 40]

Starts its own milvus-lite server in a temporary directory and grows one collection to each size in turn.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from index_updater.fusion import plan_update
from index_updater.handler import IndexUpdater, IndexUpdaterSettings
from local_stack.milvus import start_milvus_lite, stop_milvus_lite
from mmrag.messages import Envelope
from mmrag.milvus_index import MilvusIndex
from mmrag.pb.events_pb2 import Chunk, EmbeddingBatch, Modality
from mmrag.space import EmbeddingSpace
from mmrag.vector_index import VectorRow


class ScanRowsIndex(MilvusIndex):
    """The updater's read before manifests: a filter on object_id (writes still keep the manifests)."""

    def rows_of(self, object_id: str) -> list[VectorRow]:
        return self._scan_rows(object_id)


def batch_of(space: EmbeddingSpace, oid: str, version: str, chunks: int, rng: np.random.Generator) -> EmbeddingBatch:
    batch = EmbeddingBatch(
        object_id=oid,
        version=version,
        modality=Modality.MODALITY_TEXT,
        model_id=space.text_model_id,
        event_time_ms=int(time.time() * 1000),
        content_type="text/plain",
    )
    for i in range(chunks):
        vec = rng.standard_normal(space.text_dim)
        batch.chunks.append(Chunk(index=i, text=f"{oid} chunk {i}", char_start=i, char_end=i + 1, vector=vec.tolist()))
    return batch


def grow(updater: IndexUpdater, space: EmbeddingSpace, objects: int, target: int, args: argparse.Namespace) -> int:
    """Adds objects (``args.chunks`` rows each) until the collection holds at least ``target`` rows; returns how
    many objects it holds."""
    rng = np.random.default_rng(objects)
    index = updater.index
    assert isinstance(index, MilvusIndex)
    wanted = -(-target // args.chunks)  # rounded up
    while objects < wanted:
        step = min(500, wanted - objects)
        rows: list[VectorRow] = []
        for n in range(objects, objects + step):
            plan = plan_update(batch_of(space, f"bench/o{n}", "v1", args.chunks, rng), [], space, 2, 0)
            rows.extend(plan.upserts)
        index.upsert(rows)
        objects += step
    return objects


def timed(calls: Callable[[], object], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        calls()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def measure(updater: IndexUpdater, scan: IndexUpdater, space: EmbeddingSpace, objects: int, args: argparse.Namespace):
    rng = np.random.default_rng(objects + 1)
    picks = [f"bench/o{n}" for n in rng.choice(objects, size=args.lookups + 2 * args.updates, replace=False)]
    index, scanner = updater.index, scan.index
    assert isinstance(index, MilvusIndex) and isinstance(scanner, MilvusIndex)
    for oid in picks[:5]:  # both answers agree
        assert {r.vector_id for r in index.rows_of(oid)} == {r.vector_id for r in scanner.rows_of(oid)}
        assert len(index.rows_of(oid)) == args.chunks
    lookups = iter(picks[: args.lookups])
    manifest_ms = timed(lambda: index.rows_of(next(lookups)), args.lookups)
    lookups = iter(picks[: args.lookups])
    scan_ms = timed(lambda: scanner.rows_of(next(lookups)), args.lookups)
    rates = []
    for handler, chosen in ((updater, picks[args.lookups :][: args.updates]), (scan, picks[-args.updates :])):
        envelopes = [
            Envelope(oid, batch_of(space, oid, f"v{objects}", args.chunks, rng), {}, "embeddings.v1", 0, 0, 0)
            for oid in chosen
        ]
        t0 = time.perf_counter()
        for env in envelopes:
            assert not isinstance(handler.handle([env])[0], Exception)
        rates.append(len(envelopes) / (time.perf_counter() - t0))
    return manifest_ms, scan_ms, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,20000,60000")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--chunks", type=int, default=3)
    parser.add_argument("--lookups", type=int, default=60)
    parser.add_argument("--updates", type=int, default=40)
    args = parser.parse_args()
    space = EmbeddingSpace("bench-text@1", args.dim // 2, "bench-clip@1", args.dim - args.dim // 2, 0.8, 0.6)
    table = Table(title=f"rows_of and updater rate vs collection size ({args.dim}-d, {args.chunks} rows/object)")
    for column in ("rows", "manifest p50 ms", "p90", "scan p50 ms", "p90", "updater obj/s manifest", "scan"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        uri = start_milvus_lite(Path(tmp))
        try:
            settings = IndexUpdaterSettings(shards=2)
            updater = IndexUpdater(settings, space, MilvusIndex(uri, "bench_lookup", args.dim))
            scan = IndexUpdater(settings, space, ScanRowsIndex(uri, "bench_lookup", args.dim))
            updater.warm_up()
            scan.warm_up()
            objects = 0
            for size in (int(s) for s in args.sizes.split(",")):
                objects = grow(updater, space, objects, size, args)
                manifest_ms, scan_ms, rates = measure(updater, scan, space, objects, args)
                table.add_row(
                    str(objects * args.chunks),
                    *(f"{v:.2f}" for v in (statistics.median(manifest_ms), np.percentile(manifest_ms, 90))),
                    *(f"{v:.2f}" for v in (statistics.median(scan_ms), np.percentile(scan_ms, 90))),
                    *(f"{r:.1f}" for r in rates),
                )
                Console().print(table)
                sys.stdout.flush()  # a table per size, also into a file
        finally:
            stop_milvus_lite(Path(tmp))


if __name__ == "__main__":
    main()
