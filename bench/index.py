"""Vector index backends side by side: recall@10 against exact search and single-query QPS for Faiss flat, HNSW
and IVF (the adapters the Faiss workers use) and Milvus-lite (the Milvus adapter, embedded), in one run; then a
Faiss shard's snapshot written and loaded again (what a restarted worker does before it replays the log).

    uv run --no-sync python -m bench.index [--n 200000] [--queries 200] [--clip-dim 512] [--threads 1]

Data: joint vectors of the space's layout (MiniLM 384 + CLIP dims, weights 0.8/0.6): rows drawn around 2,000
topic centres per half (text-only 70%, image-only 10%, both 20%, as a corpus of documents with some images),
queries fill both halves like a text query. Uniform random vectors would be the worst case for any ANN index and
unlike embeddings. Exact = brute-force inner product (numpy). QPS = one query per call, as a worker searches.
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
from mmrag.faiss_index import FaissIndex, FaissSettings
from mmrag.vector_index import Hit, VectorRow

TEXT_DIM = 384
TOPICS = 2000
W_TEXT, W_IMAGE = 0.8, 0.6
K = 10
Searcher = Callable[[np.ndarray], list[Hit]]


@dataclass(frozen=True)
class Result:
    backend: str
    build_s: float
    recall: float
    qps: float
    p50_ms: float
    p99_ms: float


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


def exact_top(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    scores = queries @ data.T
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)


def rows_of(data: np.ndarray) -> list[VectorRow]:
    return [
        VectorRow(f"{i:08d}", f"bench/o-{i // 4}", "v1", i % 4, 0, data[i], has_text=True) for i in range(len(data))
    ]


def measure(name: str, build: Callable[[], Searcher], queries: np.ndarray, truth: np.ndarray) -> Result:
    began = time.perf_counter()
    search = build()
    build_s = time.perf_counter() - began
    search(queries[0])  # warm caches and lazy state
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        hits = search(q)
        times.append(time.perf_counter() - t)
        found.append({int(h.row.vector_id) for h in hits})
    recall = float(np.mean([len(f & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]))
    ms = np.array(times) * 1000
    return Result(name, build_s, recall, len(times) / sum(times), float(np.median(ms)), float(np.percentile(ms, 99)))


def faiss_backend(data: np.ndarray, kind: str, built: dict[str, FaissIndex]) -> Callable[[], Searcher]:
    """Rows go in as a worker applies them, in batches; the ANN kinds are built from all rows when the last
    batch crosses their threshold (IVF trains on them)."""

    def build() -> Searcher:
        threshold = 10**12 if kind == "flat" else len(data)
        ann = "hnsw" if kind == "flat" else kind
        settings = FaissSettings(faiss_ann=ann, faiss_ann_threshold=threshold, faiss_gpu="off")  # type: ignore[arg-type]
        index = built[kind] = FaissIndex(data.shape[1], settings)
        rows = rows_of(data)
        for start in range(0, len(rows), 10000):
            index.upsert(rows[start : start + 10000])
        assert index.kind == kind
        return lambda q: index.search(q, K)

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
        return lambda q: index.search(q, K)

    return build


def snapshot_times(index: FaissIndex, workdir: Path) -> tuple[float, float, int]:
    began = time.perf_counter()
    path = write_snapshot(workdir / "snapshots", index, SnapshotMark("vectors.v1", 0, index.count(), "bench"))
    written = time.perf_counter() - began
    size = sum(p.stat().st_size for p in path.iterdir())
    began = time.perf_counter()
    loaded = load_latest(workdir / "snapshots", "vectors.v1", 0, "bench", index.settings, 3_600_000)
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
    console = Console()
    data, queries = corpus(args.n, args.queries, args.clip_dim)
    console.print(
        f"{args.n} vectors of {data.shape[1]} dims, {args.queries} queries, faiss {faiss.__version__}, "
        f"{faiss.omp_get_max_threads()} threads"
    )
    truth = exact_top(data, queries)
    results, restart = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            built: dict[str, FaissIndex] = {}
            results.append(measure(f"faiss {kind}", faiss_backend(data, kind, built), queries, truth))
            console.print(results[-1])
            restart[kind] = snapshot_times(built.pop(kind), Path(tmp) / kind)
        if not args.skip_milvus:
            results.append(measure("milvus-lite", milvus_backend(data, Path(tmp)), queries, truth))
            console.print(results[-1])
    exact_qps = results[0].qps
    table = Table(title=f"recall@{K} vs exact, single-query QPS ({args.n} x {data.shape[1]})")
    for col in ("backend", "build s", f"recall@{K}", "QPS", "x exact", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            r.backend,
            f"{r.build_s:.1f}",
            f"{r.recall:.3f}",
            f"{r.qps:.0f}",
            f"{r.qps / exact_qps:.1f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
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
