"""Vector index backends side by side: recall@10 against exact search and single-query QPS for Faiss flat, HNSW
and IVF (the adapters the Faiss workers use) and Milvus-lite (the Milvus adapter, embedded), in one run; then a
Faiss shard's snapshot written and loaded again (what a restarted worker does before it replays the log).

    uv run --no-sync python -m bench.index [--n 200000] [--queries 200] [--clip-dim 512] [--threads 1]
        [--kinds flat,hnsw,hnsw-halves,ivf] [--skip-milvus]

Data: joint vectors of the space's layout (MiniLM 384 + CLIP dims, weights 0.8/0.6): rows drawn around 2,000
topic centres per half (text-only 70%, image-only 10%, both 20%, as a corpus of documents with some images),
queries fill both halves. Uniform random vectors would be the worst case for any ANN index and unlike embeddings.
Each index is asked three kinds of query: the joint vector (``MMRAG_FUSION=joint``), and each half with the other
zeroed, filtered to the rows having it (the default fusion's text and CLIP lists). ``hnsw-halves`` is the layout
the Faiss workers keep (one index per half, mmrag/faiss_halves.py). Exact = brute-force inner product (numpy) over
the eligible rows. QPS = one joint query per call, as a worker searches.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from consumers.faiss_worker.snapshot import SnapshotMark, load_latest, write_snapshot
from mmrag.faiss_halves import HalvesIndex
from mmrag.faiss_index import FaissIndex, FaissSettings
from mmrag.vector_index import NO_FILTER, Hit, SearchFilter, VectorRow

TEXT_DIM = 384
TOPICS = 2000
W_TEXT, W_IMAGE = 0.8, 0.6
K = 10
Searcher = Callable[[np.ndarray, SearchFilter], list[Hit]]


@dataclass(frozen=True)
class Result:
    backend: str
    build_s: float
    recall: dict[str, float]  # by query kind
    p50_ms: dict[str, float]
    qps: float
    p99_ms: float


@dataclass(frozen=True)
class QuerySet:
    """Queries of one kind, the filter they are searched with, and their exact top K."""

    vectors: np.ndarray
    where: SearchFilter
    truth: np.ndarray


def unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def halves(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray, noise: float) -> np.ndarray:
    picked = centres[rng.integers(0, len(centres), n)]
    return unit_rows(picked + noise * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim))


def corpus(n: int, queries: int, clip_dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    text_c = unit_rows(rng.standard_normal((TOPICS, TEXT_DIM)).astype(np.float32))
    image_c = unit_rows(rng.standard_normal((TOPICS, clip_dim)).astype(np.float32))
    kind = rng.random(n)  # < 0.7 text only, < 0.8 image only, else both
    text = np.where(((kind < 0.7) | (kind >= 0.8))[:, None], halves(rng, n, TEXT_DIM, text_c, 1.0), 0)
    image = np.where((kind >= 0.7)[:, None], halves(rng, n, clip_dim, image_c, 1.0), 0)
    data = np.hstack([W_TEXT * text, W_IMAGE * image]).astype(np.float32)
    q_text = halves(rng, queries, TEXT_DIM, text_c, 1.2)
    q = np.hstack([W_TEXT * q_text, W_IMAGE * halves(rng, queries, clip_dim, image_c, 1.2)])
    return data, q.astype(np.float32)


def exact_top(data: np.ndarray, queries: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
    scores = queries @ data.T
    if eligible is not None:
        scores[:, ~eligible] = -np.inf
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)


def query_sets(data: np.ndarray, queries: np.ndarray) -> dict[str, QuerySet]:
    """The joint queries, and each half alone over the rows having it."""
    text_q, clip_q = queries.copy(), queries.copy()
    text_q[:, TEXT_DIM:] = 0
    clip_q[:, :TEXT_DIM] = 0
    has_text, has_image = _has(data)
    return {
        "joint": QuerySet(queries, NO_FILTER, exact_top(data, queries)),
        "text half": QuerySet(text_q, SearchFilter(has_text=True), exact_top(data, text_q, has_text)),
        "CLIP half": QuerySet(clip_q, SearchFilter(has_image=True), exact_top(data, clip_q, has_image)),
    }


def _has(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.any(data[:, :TEXT_DIM] != 0, axis=1), np.any(data[:, TEXT_DIM:] != 0, axis=1)


def rows_of(data: np.ndarray) -> list[VectorRow]:
    has_text, has_image = _has(data)
    return [
        VectorRow(
            f"{i:08d}",
            f"bench/o-{i // 4}",
            "v1",
            i % 4,
            0,
            data[i],
            has_text=bool(has_text[i]),
            has_image=bool(has_image[i]),
        )
        for i in range(len(data))
    ]


def measure(name: str, build: Callable[[], Searcher], sets: dict[str, QuerySet]) -> Result:
    began = time.perf_counter()
    search = build()
    build_s = time.perf_counter() - began
    recall, p50, joint_ms = {}, {}, np.zeros(0)
    for kind, qs in sets.items():
        search(qs.vectors[0], qs.where)  # warm caches and lazy state (a filter's bitmap)
        times, found = [], []
        for q in qs.vectors:
            t = time.perf_counter()
            hits = search(q, qs.where)
            times.append(time.perf_counter() - t)
            found.append({int(h.row.vector_id) for h in hits})
        recall[kind] = float(np.mean([len(f & set(t.tolist())) / K for f, t in zip(found, qs.truth, strict=True)]))
        ms = np.array(times) * 1000
        p50[kind] = float(np.median(ms))
        if kind == "joint":
            joint_ms = ms
    return Result(name, build_s, recall, p50, 1000 / float(np.mean(joint_ms)), float(np.percentile(joint_ms, 99)))


def faiss_backend(data: np.ndarray, kind: str, built: dict[str, FaissIndex | HalvesIndex]) -> Callable[[], Searcher]:
    """Rows go in as a worker applies them, in batches; the ANN kinds are built from all rows when the last
    batch crosses their threshold (IVF trains on them), and HNSW's growing rows are then built into the graph."""

    def build() -> Searcher:
        threshold = 10**12 if kind == "flat" else 1 if kind == "hnsw-halves" else len(data)
        ann = "hnsw" if kind in ("flat", "hnsw-halves") else kind
        settings = FaissSettings(faiss_ann=ann, faiss_ann_threshold=threshold, faiss_gpu="off")  # type: ignore[arg-type]
        index: FaissIndex | HalvesIndex
        index = (
            HalvesIndex(data.shape[1], TEXT_DIM, settings)
            if kind == "hnsw-halves"
            else FaissIndex(data.shape[1], settings)
        )
        built[kind] = index
        rows = rows_of(data)
        for start in range(0, len(rows), 10000):
            index.upsert(rows[start : start + 10000])
        index.build()
        return lambda q, where: index.search(q, K, where=where)

    return build


def milvus_backend(data: np.ndarray, workdir: Path) -> Callable[[], Searcher]:
    def build() -> Searcher:
        from mmrag.milvus_index import MilvusIndex

        index = MilvusIndex(str(workdir / "milvus.db"), "bench", data.shape[1], timeout_s=600)
        index.start()
        rows = rows_of(data)
        for start in range(0, len(rows), 2000):
            index.upsert(rows[start : start + 2000])
        index.client.flush("bench")
        assert index.count() == len(rows), "Milvus-lite holds every row"
        return lambda q, where: index.search(q, K, where=where)

    return build


def snapshot_times(index: FaissIndex | HalvesIndex, workdir: Path) -> tuple[float, float, int]:
    began = time.perf_counter()
    path = write_snapshot(workdir / "snapshots", index, SnapshotMark("vectors.v1", 0, index.count(), "bench"))
    written = time.perf_counter() - began
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    began = time.perf_counter()
    per_half = isinstance(index, HalvesIndex)
    loaded = load_latest(workdir / "snapshots", "vectors.v1", 0, "bench", index.settings, 3_600_000, per_half)
    assert loaded is not None and loaded[0].count() == index.count()
    return written, time.perf_counter() - began, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="vectors in the index")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clip-dim", type=int, default=512, help="CLIP half (ViT-B/32: 512)")
    parser.add_argument("--threads", type=int, default=1, help="Faiss OpenMP threads (a worker's MMRAG_FAISS_THREADS)")
    parser.add_argument("--kinds", default="flat,hnsw,ivf", help="Faiss kinds to run (flat first: the baseline)")
    parser.add_argument("--skip-milvus", action="store_true")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    console = Console(width=200)
    data, queries = corpus(args.n, args.queries, args.clip_dim)
    console.print(
        f"{args.n} vectors of {data.shape[1]} dims, {args.queries} queries, faiss {faiss.__version__}, "
        f"{faiss.omp_get_max_threads()} threads"
    )
    sets = query_sets(data, queries)
    results, restart = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            built: dict[str, FaissIndex | HalvesIndex] = {}
            results.append(measure(f"faiss {kind}", faiss_backend(data, kind, built), sets))
            console.print(results[-1])
            restart[kind] = snapshot_times(built.pop(kind), Path(tmp) / kind)
        if not args.skip_milvus:
            results.append(measure("milvus-lite", milvus_backend(data, Path(tmp)), sets))
            console.print(results[-1])
    exact_qps = results[0].qps
    table = Table(title=f"recall@{K} vs exact, single-query QPS ({args.n} x {data.shape[1]})")
    for col in (
        "backend",
        "build s",
        *(f"recall {k}" for k in sets),
        "QPS joint",
        "x exact",
        *(f"p50 ms {k}" for k in sets),
    ):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            r.backend,
            f"{r.build_s:.1f}",
            *(f"{r.recall[k]:.3f}" for k in sets),
            f"{r.qps:.0f}",
            f"{r.qps / exact_qps:.1f}",
            *(f"{r.p50_ms[k]:.2f}" for k in sets),
        )
    console.print(table)
    snaps = Table(title="Faiss shard snapshot: write, and load as a restarted worker does")
    for col in ("kind", "write s", "load s", "MB"):
        snaps.add_column(col, justify="right")
    for kind, (written, loaded, size) in restart.items():
        snaps.add_row(kind, f"{written:.2f}", f"{loaded:.2f}", f"{size / 1e6:.0f}")
    console.print(snaps)


if __name__ == "__main__":
    main()
