"""A Faiss shard's rows indexed per half of the joint vector (mmrag/faiss_halves.py): half queries find their exact
top k on HNSW where one graph of joint vectors loses them, rows move between halves on overwrite, duplicates within
one call, joint queries, and snapshots of the per-half layout."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from consumers.faiss_worker.snapshot import SnapshotMark, load_latest, write_snapshot
from mmrag.errors import PermanentError
from mmrag.faiss_halves import HalvesIndex
from mmrag.faiss_index import FaissIndex, FaissSettings
from mmrag.vector_index import SearchFilter, VectorRow

TEXT, IMAGE = 64, 64
HNSW = FaissSettings(faiss_ann_threshold=1, faiss_gpu="off")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _corpus(n: int, topics: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray, list[VectorRow]]:
    """Joint vectors like a space's (0.8 x MiniLM | 0.6 x CLIP) around topic centres: 70% text only, 10% image only,
    20% both (bench.index's mix)."""
    rng = np.random.default_rng(seed)
    text_c, image_c = _unit(rng.standard_normal((topics, TEXT))), _unit(rng.standard_normal((topics, IMAGE)))
    kind = rng.random(n)
    noise_t, noise_i = rng.standard_normal((n, TEXT)) / np.sqrt(TEXT), rng.standard_normal((n, IMAGE)) / np.sqrt(IMAGE)
    text = np.where(((kind < 0.7) | (kind >= 0.8))[:, None], _unit(text_c[rng.integers(0, topics, n)] + noise_t), 0)
    image = np.where((kind >= 0.7)[:, None], _unit(image_c[rng.integers(0, topics, n)] + noise_i), 0)
    data = np.hstack([0.8 * text, 0.6 * image]).astype(np.float32)
    rows = [
        VectorRow(f"v{i}", f"b/o{i}", "v1", 0, 0, data[i], has_text=bool(text[i].any()), has_image=bool(image[i].any()))
        for i in range(n)
    ]
    queries = 0.6 * _unit(
        image_c[rng.integers(0, topics, 40)] + 1.2 * rng.standard_normal((40, IMAGE)) / np.sqrt(IMAGE)
    )
    return data, np.hstack([np.zeros((40, TEXT), np.float32), queries]).astype(np.float32), rows


def _recall(index: FaissIndex | HalvesIndex, data: np.ndarray, queries: np.ndarray) -> float:
    images = np.any(data[:, TEXT:] != 0, axis=1)
    found = []
    for q in queries:
        exact = set(np.argsort(-np.where(images, data @ q, -np.inf))[:10].tolist())
        got = {int(h.row.vector_id[1:]) for h in index.search(q, 10, where=SearchFilter(has_image=True))}
        found.append(len(got & exact) / 10)
    return float(np.mean(found))


def test_a_clip_half_query_finds_its_exact_top_10_on_hnsw_where_one_joint_graph_does_not() -> None:
    data, queries, rows = _corpus(30_000, 2000)
    joint, halves = FaissIndex(TEXT + IMAGE, HNSW), HalvesIndex(TEXT + IMAGE, TEXT, HNSW)
    for index in (joint, halves):
        index.upsert(rows)
        index.build()
    assert halves.kind == "text hnsw, image hnsw" and halves.count() == len(rows)
    per_half, one_graph = _recall(halves, data, queries), _recall(joint, data, queries)
    # 30% of the rows have an image (over MMRAG_FAISS_EXACT_SHARE): both are searched by their graphs
    assert per_half >= 0.97, f"recall@10 of CLIP-half queries per half {per_half:.3f}"
    assert one_graph < per_half, f"one joint graph {one_graph:.3f}, per half {per_half:.3f}"


def _row(vid: str, text: np.ndarray | None, image: np.ndarray | None, **extra: object) -> VectorRow:
    vector = np.concatenate([np.zeros(TEXT) if text is None else text, np.zeros(IMAGE) if image is None else image])
    return VectorRow(vid, f"b/{vid}", "v1", 0, 0, vector.astype(np.float32), has_text=text is not None, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize("threshold", [1, 10**9], ids=["hnsw", "flat"])
def test_rows_move_between_halves_and_joint_queries_rank_by_the_whole_vector(threshold: int) -> None:
    rng = np.random.default_rng(5)
    t, i = _unit(rng.standard_normal(TEXT)), _unit(rng.standard_normal(IMAGE))
    index = HalvesIndex(TEXT + IMAGE, TEXT, FaissSettings(faiss_ann_threshold=threshold, faiss_gpu="off"))
    index.upsert(
        [_row("both", 0.8 * t, 0.6 * i, has_image=True), _row("text", 0.8 * t, None), _row("none", None, None)]
    )
    assert index.count() == 3 and (index.text.count(), index.image.count()) == (3, 1)  # the zero row: text half
    index.upsert([_row("both", 0.8 * t, None)])  # overwritten without its image: leaves the CLIP half
    assert (index.count(), index.text.count(), index.image.count()) == (3, 3, 0)
    (back,) = index.rows_of("b/both")
    np.testing.assert_array_equal(back.vector[TEXT:], np.zeros(IMAGE))
    # one call holding a vector_id thrice: the last row wins in both halves
    index.upsert([_row("x", None, i), _row("x", t, None), _row("x", None, 0.6 * i, has_image=True)])
    assert (index.count(), index.text.count(), index.image.count()) == (4, 3, 1)
    np.testing.assert_allclose(index.rows_of("b/x")[0].vector, np.concatenate([np.zeros(TEXT), 0.6 * i]), rtol=1e-6)
    # a joint query: the whole inner product, both halves read back
    index.upsert([_row("both", 0.8 * t, 0.6 * i, has_image=True)])
    q = np.concatenate([t, i]).astype(np.float32)
    hits = {h.row.vector_id: h.score for h in index.search(q, 10)}
    assert hits["both"] == pytest.approx(0.8 + 0.6, abs=1e-5) and hits["text"] == pytest.approx(0.8, abs=1e-5)
    assert hits["x"] == pytest.approx(0.6, abs=1e-5) and hits["none"] == pytest.approx(0.0, abs=1e-6)
    assert next(iter(hits)) == "both"
    with pytest.raises(PermanentError, match="has 3 dims"):  # a batch with a row of other dims changes nothing
        index.upsert([_row("new", t, i), replace(_row("bad", t, None), vector=np.ones(3, np.float32))])
    assert (index.count(), index.text.count(), index.image.count()) == (4, 3, 2)
    index.delete(["both", "x", "unknown"])
    assert (index.count(), index.text.count(), index.image.count()) == (2, 2, 0)


def _answers(index: HalvesIndex, q: np.ndarray) -> list[tuple[str, str, bool, float]]:
    return [(h.row.vector_id, h.row.object_id, h.row.has_image, h.score) for h in index.search(q, 10)]


def test_a_snapshot_of_the_halves_restores_the_same_answers_and_is_not_loaded_as_one_index(tmp_path: Path) -> None:
    data, queries, rows = _corpus(3000, 100)
    settings = FaissSettings(faiss_ann_threshold=500, faiss_gpu="off")
    index = HalvesIndex(TEXT + IMAGE, TEXT, settings)
    index.upsert(rows[:2000])
    index.build()
    index.upsert(rows[2000:])  # growing rows in both halves at the snapshot
    index.delete(["v5", "v6"])
    assert index.text.unbuilt() and index.image.unbuilt()
    write_snapshot(tmp_path, index, SnapshotMark("vectors.v1", 1, 42, "space"))
    assert load_latest(tmp_path, "vectors.v1", 1, "space", settings, 60_000) is None  # the other layout: rebuilt
    found = load_latest(tmp_path, "vectors.v1", 1, "space", settings, 60_000, per_half=True)
    assert found is not None and found[1].next_offset == 42
    restored = found[0]
    assert isinstance(restored, HalvesIndex) and restored.count() == index.count() == len(rows) - 2
    for q in [*queries[:5], data[7], data[2500]]:
        assert _answers(restored, q) == _answers(index, q)
    assert restored.rows_of("b/o2500")[0].vector.tolist() == index.rows_of("b/o2500")[0].vector.tolist()
    restored.upsert([replace(rows[7], vector=-rows[7].vector)])  # goes on applying where it stopped
    assert restored.search(-rows[7].vector, 1)[0].row.vector_id == "v7"
