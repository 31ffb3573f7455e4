"""Faiss shard state without a broker: snapshots restore the exact index (ids, kind, dead marks, payload), kinds
switch at the threshold and rebuild deterministically, and the updater's vectors.v1 table undoes aborted batches."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from consumers.faiss_worker.snapshot import SnapshotMark, load_latest, write_snapshot
from mmrag.changelog import LoggedRecord
from mmrag.faiss_index import FaissIndex, FaissSettings
from mmrag.kafka_clients import key_partition
from mmrag.vector_index import VectorRow
from mmrag.vector_log import VectorLogTable, from_record, to_record, vector_outputs

pytestmark = pytest.mark.unit
DIM = 8


def rows(n: int, seed: int = 0, prefix: str = "v") -> list[VectorRow]:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return [
        VectorRow(f"{prefix}{i}", f'b/o\t{i % 7}"ü', "v1", i, 0, vecs[i], text=f"t{i} \\ \n", has_text=True)
        for i in range(n)
    ]


def flat(found: list[VectorRow]) -> list[tuple[str, str, list[float]]]:
    return [(r.vector_id, r.text, r.vector.tolist()) for r in found]


def answers(index: FaissIndex, queries: np.ndarray) -> list[list[tuple[str, float]]]:
    return [[(h.row.vector_id, h.score) for h in index.search(q, 5)] for q in queries]


@pytest.mark.parametrize("ann", ["hnsw", "ivf"])
def test_snapshot_restores_the_same_index_and_kind_switches_at_the_threshold(tmp_path: Path, ann: str) -> None:
    settings = FaissSettings(faiss_ann=ann, faiss_ann_threshold=300, faiss_gpu="off")  # type: ignore[arg-type]
    index = FaissIndex(DIM, settings)
    data = rows(400)
    index.upsert(data[:250])
    assert index.kind == "flat"
    index.upsert(data[250:])
    assert index.kind == ann
    index.delete([r.vector_id for r in data[:20]])
    index.upsert([replace(data[30], text="new")])
    mark = SnapshotMark("vectors.v1", 2, 1234, "space")
    write_snapshot(tmp_path, index, mark)
    restored, got = load_latest(tmp_path, "vectors.v1", 2, "space", settings, max_age_ms=60_000)  # type: ignore[misc]
    assert (got.next_offset, got.partition, restored.kind, restored.count()) == (1234, 2, ann, 380)
    queries = np.stack([r.vector for r in rows(6, seed=9)])
    assert answers(restored, queries) == answers(index, queries)
    assert flat(restored.rows_of(data[30].object_id)) == flat(index.rows_of(data[30].object_id))
    assert next(r for r in restored.rows_of(data[30].object_id) if r.vector_id == "v30").text == "new"
    assert load_latest(tmp_path, "vectors.v1", 2, "other-space", settings, 60_000) is None
    assert load_latest(tmp_path, "vectors.v1", 1, "space", settings, 60_000) is None


def test_newest_snapshot_wins_old_ones_pruned_and_too_old_ones_refused(tmp_path: Path) -> None:
    index = FaissIndex(DIM)
    index.upsert(rows(5))
    for offset in (5, 9, 12):
        write_snapshot(tmp_path, index, SnapshotMark("t", 0, offset, "s"))
    kept = sorted(p.name for p in (tmp_path / "t-0").iterdir())
    assert kept == [f"{9:020d}", f"{12:020d}"]
    assert load_latest(tmp_path, "t", 0, "s", FaissSettings(), 60_000)[1].next_offset == 12  # type: ignore[index]
    assert load_latest(tmp_path, "t", 0, "s", FaissSettings(), max_age_ms=-1) is None


def test_rebuilds_after_deletes_are_deterministic() -> None:
    settings = FaissSettings(faiss_compact_fraction=0.2, faiss_gpu="off")
    a, b = FaissIndex(DIM, settings), FaissIndex(DIM, settings)
    data = rows(100)
    for index in (a, b):
        index.upsert(data)
        index.delete([r.vector_id for r in data[::3]])  # 34 dead > 20%: rebuilt
        index.upsert(data[::6])
    assert a.state()[2] == b.state()[2]
    # rebuilt at the 21st delete (> 20% of 100 dead): 79 live renumbered 0..78, then 13 more deletes, 17 upserts
    assert (a.state()[2]["dead"], a.state()[2]["next_id"]) == (13, 96)
    queries = np.stack([r.vector for r in rows(4, seed=3)])
    assert answers(a, queries) == answers(b, queries)
    assert a.count() == 100 - 34 + 17


def test_vector_log_table_restores_its_partitions_and_undoes_aborted_batches() -> None:
    data = rows(30)
    outs = vector_outputs("vectors.v1", data, [], "ignored", 0, "space")
    log = [
        LoggedRecord(0, i, o.key, to_record(r, "space").SerializeToString(), {})
        for i, (o, r) in enumerate(zip(outs, data, strict=True))
    ]
    log.append(LoggedRecord(0, 30, "v3", None, {}))  # a tombstone
    log.append(LoggedRecord(0, 31, "x", to_record(replace(data[4], vector_id="x"), "other").SerializeToString(), {}))
    table = VectorLogTable(lambda: iter(log), lambda: 3, "space")
    mine = {key_partition(r.object_id, 3) for r in data[:2]}
    table.restore(mine)
    expected = {r.vector_id for r in data if key_partition(r.object_id, 3) in mine} - {"v3"}
    kept = {r.vector_id for oid in {r.object_id for r in data} for r in table.rows_of(oid)}
    assert kept == expected and expected
    oid = data[0].object_id
    before = table.rows_of(oid)
    table.upsert([replace(data[0], text="changed"), replace(data[0], vector_id="new")])
    table.delete([before[1].vector_id])
    table.abort()
    assert [(r.vector_id, r.text) for r in table.rows_of(oid)] == [(r.vector_id, r.text) for r in before]
    table.upsert([replace(data[0], text="changed")])
    table.commit()
    table.abort()
    assert next(r.text for r in table.rows_of(oid) if r.vector_id == data[0].vector_id) == "changed"
    assert from_record(to_record(data[0], "s")).text == data[0].text


def test_an_ivf_shard_emptied_by_deletes_keeps_working() -> None:
    settings = FaissSettings(faiss_ann="ivf", faiss_ann_threshold=50, faiss_gpu="off")
    index = FaissIndex(DIM, settings)
    data = rows(60)
    index.upsert(data)
    assert index.kind == "ivf"
    index.delete([r.vector_id for r in data])
    assert (index.count(), index.kind, index.search(data[0].vector, 3)) == (0, "flat", [])
    index.upsert(data[:60])
    assert index.kind == "ivf" and [h.row.vector_id for h in index.search(data[7].vector, 1)] == ["v7"]


@pytest.mark.parametrize("ann", ["hnsw", "ivf"])
def test_replicas_applying_the_same_records_in_other_batches_answer_the_same(ann: str) -> None:
    settings = FaissSettings(faiss_ann=ann, faiss_ann_threshold=200, faiss_threads=2, faiss_gpu="off")  # type: ignore[arg-type]
    a, b = FaissIndex(DIM, settings), FaissIndex(DIM, settings)
    data = rows(600)
    log: list[VectorRow | str] = []  # one partition's records: upserts, and every 10th a tombstone of an older row
    for i, r in enumerate(data):
        log += [r, data[i - 5].vector_id] if i % 10 == 9 else [r]
    for index, step in ((a, 7), (b, 50)):  # the same records in other poll batches, applied as a worker does
        for start in range(0, len(log), step):
            if index is a:
                index.build(37)  # a moves growing rows into its graph between batches, b only at the end
            pending: list[VectorRow] = []
            for record in log[start : start + step]:
                if isinstance(record, str):
                    index.upsert(pending)
                    pending = []
                    index.delete([record])
                else:
                    pending.append(record)
            index.upsert(pending)
    assert a.kind == b.kind == ann
    queries = np.stack([r.vector for r in rows(20, seed=11)])
    assert [h[0] for h in answers(a, queries)] == [h[0] for h in answers(b, queries)]
    a.build(), b.build()
    assert a.unbuilt() == b.unbuilt() == 0
    assert a.state()[0] == b.state()[0], "the same index, byte for byte (an HNSW graph included)"
    queries = np.stack([r.vector for r in rows(20, seed=11)])
    assert answers(a, queries) == answers(b, queries)


def test_searches_are_answered_by_the_old_index_while_a_rebuild_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = FaissSettings(faiss_ann="hnsw", faiss_ann_threshold=300, faiss_gpu="off")
    index = FaissIndex(DIM, settings)
    data = rows(400)
    index.upsert(data[:299])
    building, searched = threading.Event(), threading.Event()
    real_add = FaissIndex._add

    def held_add(self: FaissIndex, vectors: np.ndarray, ids: np.ndarray) -> None:
        if self is not index:  # the rebuild's new index: held until a search went through
            building.set()
            searched.wait(30)
        real_add(self, vectors, ids)

    monkeypatch.setattr(FaissIndex, "_add", held_add)
    with ThreadPoolExecutor(2) as pool:
        writer = pool.submit(index.upsert, data[299:])  # the 300th row crosses the threshold: flat -> HNSW
        assert building.wait(30)
        during = pool.submit(lambda: (index.kind, [h.row.vector_id for h in index.search(data[5].vector, 2)]))
        try:
            assert during.result(timeout=10)[0] == "flat", "the old index answered while the new one was built"
            assert during.result()[1][0] == "v5"
        finally:
            searched.set()
        writer.result(timeout=30)
    assert (index.kind, index.count()) == ("hnsw", 400)
    assert [h.row.vector_id for h in index.search(data[350].vector, 1)] == ["v350"]


def test_applied_hnsw_rows_are_searched_exactly_until_built_and_snapshots_keep_them(tmp_path: Path) -> None:
    """An HNSW shard appends applied rows to its growing rows (O(1) per row) and moves them into the graph later: a
    row is found the moment it is applied, by the same search before, during and after the build, and a snapshot
    taken halfway restores the graph and the growing rows as they were."""
    settings = FaissSettings(faiss_ann="hnsw", faiss_ann_threshold=100, faiss_gpu="off")
    index = FaissIndex(DIM, settings)
    data = rows(500)
    index.upsert(data[:300])
    assert (index.kind, index.unbuilt()) == ("hnsw", 300), "the threshold's rebuild stages every row as growing"
    assert index.build(120) == 180
    index.upsert(data[300:])
    index.delete(["v5", "v350"])
    index.upsert([replace(data[7], text="changed")])
    assert index.unbuilt() == 500 + 1 - 120
    for r in (data[3], data[200], data[499]):
        assert [h.row.vector_id for h in index.search(r.vector, 1)] == [r.vector_id]
    assert "v5" not in {h.row.vector_id for h in index.search(data[5].vector, 5)}
    assert "v350" not in {h.row.vector_id for h in index.search(data[350].vector, 5)}
    assert [r.text for r in index.rows_of(data[7].object_id) if r.vector_id == "v7"] == ["changed"]
    write_snapshot(tmp_path, index, SnapshotMark("vectors.v1", 0, 10, "space"))
    restored, _ = load_latest(tmp_path, "vectors.v1", 0, "space", settings, 60_000)  # type: ignore[misc]
    queries = np.stack([r.vector for r in rows(8, seed=4)])
    assert restored.unbuilt() == index.unbuilt() and answers(restored, queries) == answers(index, queries)
    assert flat(restored.rows_of(data[250].object_id)) == flat(index.rows_of(data[250].object_id))
    for built in (index, restored):
        assert built.build() == 0
    assert restored.state()[0] == index.state()[0], "built after the restore: the same graph"
    assert restored.state().growing is None
    assert [h.row.vector_id for h in restored.search(data[499].vector, 1)] == ["v499"]


def test_too_many_growing_rows_make_applying_build_first() -> None:
    settings = FaissSettings(faiss_ann="hnsw", faiss_ann_threshold=50, faiss_growing_max=100, faiss_gpu="off")
    index = FaissIndex(DIM, settings)
    data = rows(600)
    index.upsert(data[:60])
    assert index.unbuilt() == 60, "the threshold's rebuild staged 50 rows, 10 more were applied"
    for start in range(60, 600, 40):
        index.upsert(data[start : start + 40])
        meta = index.state().meta
        built = max(meta.get("built", meta["next_id"]), meta.get("staged", 0))
        assert meta["next_id"] - built <= 100, "applied rows past the limit were built first"
    assert index.count() == 600 and 0 < index.unbuilt() <= 100
    no_growing = FaissIndex(DIM, settings.model_copy(update={"faiss_growing_max": 0}))
    no_growing.upsert(data[:60])
    no_growing.upsert(data[60:70])
    assert (no_growing.kind, no_growing.unbuilt()) == ("hnsw", 0)


def test_the_graph_takes_growing_rows_when_the_shard_is_quiet_or_rows_waited_too_long() -> None:
    from consumers.faiss_worker.shard import _BUILD_QUIET_S, _BUILD_WAIT_MAX_S, build_due

    now = 1000.0
    assert not build_due(now, last_records=now - 10, growing_since=None), "nothing growing: nothing to build"
    assert build_due(now, last_records=now - _BUILD_QUIET_S, growing_since=now - 1), "quiet: build"
    assert not build_due(now, last_records=now - 0.1, growing_since=now - 5), "a burst goes on: the graph waits"
    trickle = build_due(now, last_records=now - 0.1, growing_since=now - _BUILD_WAIT_MAX_S)
    assert trickle, "records more often than the quiet time for long: built between polls anyway"
