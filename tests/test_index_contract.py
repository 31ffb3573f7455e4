"""One contract for every vector index adapter (Haystack's shared DocumentStore tests are the model): Faiss flat,
HNSW and IVF, Faiss flat on a GPU (marker gpu, in the GPU environment), and Milvus on the session's milvus-lite
server. Writer side: upsert, overwrite, delete, rows of an
object, idempotent replay; searcher side: top-k per shard equal to an exact search on small data, filters, count;
awkward object ids and texts round-trip unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from mmrag.faiss_halves import HalvesIndex
from mmrag.faiss_index import FaissIndex, FaissSettings
from mmrag.vector_index import NO_FILTER, SearchFilter, VectorIndex, VectorRow

DIM = 16
SHARDS = 3
AWKWARD_IDS = [
    "b/plain.txt",
    "b/quote\"d's.txt",
    "b/back\\slash\\\\double",
    "b/tab\there",
    "b/new\nline\rcr",
    "b/ünïcödé/日本語/😀.png",
    "b/100% + a=b&c;d",
    "b//a/./../ x ",
    "b/ends-with-backslash\\",
]
AWKWARD_TEXT = "quotes \" ' backslash \\ tab \t newline \n ünïcödé 😀 %s {} [] $1"


def _faiss(ann: str, threshold: int, halves: bool = False) -> FaissIndex | HalvesIndex:
    """One index, or one per half of the vector (``halves``: the first DIM // 2 dims a half, as a space's MiniLM
    half; the corpus' vectors fill both, so every search here is a joint one)."""
    settings = FaissSettings(faiss_ann=ann, faiss_ann_threshold=threshold, faiss_gpu="off")  # type: ignore[arg-type]
    return HalvesIndex(DIM, DIM // 2, settings) if halves else FaissIndex(DIM, settings)


@pytest.fixture(
    params=[
        "faiss-flat",
        "faiss-hnsw",
        "faiss-ivf",
        "faiss-halves-flat",
        "faiss-halves-hnsw",
        pytest.param("faiss-gpu", marks=pytest.mark.gpu),
        pytest.param("milvus", marks=pytest.mark.kafka),
    ]
)
def index(request: pytest.FixtureRequest, unique: str) -> Iterator[VectorIndex]:
    if request.param == "milvus":
        from mmrag.milvus_index import MilvusIndex

        infra = request.getfixturevalue("infra")
        made: VectorIndex = MilvusIndex(infra.milvus_uri, f"contract{unique}", DIM, alias=f"contract{unique}_live")
    elif request.param == "faiss-flat":
        made = _faiss("hnsw", 10**9)
    elif request.param.startswith("faiss-halves-"):
        made = _faiss("hnsw", 10**9 if request.param.endswith("flat") else 1, halves=True)
    elif request.param == "faiss-gpu":  # flat on a CUDA device: run where a faiss GPU build is installed (-m gpu)
        from mmrag.faiss_index import gpu_available

        settings = FaissSettings(faiss_ann_threshold=10**9, faiss_gpu="auto")
        if not gpu_available(settings):
            pytest.skip("no faiss GPU build or no CUDA device here")
        made = FaissIndex(DIM, settings)
    else:  # approximate from the first row on; small data is searched exactly all the same
        made = _faiss(request.param.removeprefix("faiss-"), 1)
    made.start()
    yield made


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def make_row(vid: str, oid: str, vec: np.ndarray, shard: int, chunk: int = 0, **extra: object) -> VectorRow:
    return VectorRow(
        vector_id=vid,
        object_id=oid,
        version="v1",
        chunk_index=chunk,
        shard=shard,
        vector=vec,
        text=f"text of {vid}",
        has_text=True,
        **extra,  # type: ignore[arg-type]
    )


def corpus(seed: int = 7, objects: int = 24, chunks: int = 3) -> list[VectorRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for o in range(objects):
        oid = AWKWARD_IDS[o] if o < len(AWKWARD_IDS) else f"b/doc-{o}"
        for c in range(chunks):
            image = o % 4 == 0
            rows.append(
                make_row(f"v{o:02d}-{c}", oid, unit(rng), o % SHARDS, c, has_image=image, page=c, char_end=10 * c)
            )
    return rows


def exact(rows: list[VectorRow], q: np.ndarray, k: int, shard: int | None, where: SearchFilter) -> list[str]:
    eligible = [r for r in rows if (shard is None or r.shard == shard) and where.admits(r)]
    scored = sorted(eligible, key=lambda r: (-float(np.dot(r.vector, q)), r.vector_id))
    return [r.vector_id for r in scored[:k]]


def ids(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [h.row.vector_id for h in hits]


def test_upsert_overwrite_delete_and_rows_of(index: VectorIndex) -> None:
    rows = corpus(objects=4)
    index.upsert(rows)
    assert index.count() == 12
    mine = sorted(index.rows_of(AWKWARD_IDS[1]), key=lambda r: r.chunk_index)
    assert [r.vector_id for r in mine] == ["v01-0", "v01-1", "v01-2"]
    np.testing.assert_allclose(mine[2].vector, rows[5].vector, rtol=1e-6)
    assert (mine[2].text, mine[2].page, mine[2].char_end, mine[2].shard) == ("text of v01-2", 2, 20, 1)
    moved = replace(rows[5], vector=-rows[5].vector, text="overwritten", version="v2", has_image=True)
    index.upsert([moved])
    assert index.count() == 12
    again = {r.vector_id: r for r in index.rows_of(AWKWARD_IDS[1])}
    assert (again["v01-2"].text, again["v01-2"].version, again["v01-2"].has_image) == ("overwritten", "v2", True)
    np.testing.assert_allclose(again["v01-2"].vector, -rows[5].vector, rtol=1e-6)
    assert ids(index.search(-rows[5].vector, 1, shard=1)) == ["v01-2"]
    index.delete(["v01-0", "v01-1", "v01-2"])
    index.delete(["v01-0", "no-such-id"])  # a second delete and an unknown id change nothing
    assert index.rows_of(AWKWARD_IDS[1]) == [] and index.count() == 9
    assert "v01-2" not in ids(index.search(-rows[5].vector, 12))


def test_search_equals_exact_search_per_shard(index: VectorIndex) -> None:
    rows = corpus()
    index.upsert(rows)
    rng = np.random.default_rng(1)
    for _ in range(5):
        q = unit(rng)
        for shard in (None, 0, 1, 2):
            hits = index.search(q, 7, shard=shard)
            assert ids(hits) == exact(rows, q, 7, shard, NO_FILTER), f"shard {shard}"
            by_id = {r.vector_id: r for r in rows}
            for h in hits:
                want = by_id[h.row.vector_id]
                assert h.score == pytest.approx(float(np.dot(want.vector, q)), abs=1e-5)
                assert (h.row.shard, h.row.object_id) == (want.shard, want.object_id)
    assert len(index.search(rows[0].vector, 500)) == len(rows)  # top_k beyond the index: everything, best first


def test_filters_by_object_and_halves(index: VectorIndex) -> None:
    rows = corpus()
    index.upsert(rows)
    q = unit(np.random.default_rng(2))
    wheres = [
        SearchFilter(object_ids=frozenset(AWKWARD_IDS[:5])),
        SearchFilter(object_ids=frozenset([AWKWARD_IDS[3], AWKWARD_IDS[8], "b/not-indexed"])),
        SearchFilter(has_image=True),
        SearchFilter(has_image=False, object_ids=frozenset(AWKWARD_IDS)),
        SearchFilter(has_text=False),
    ]
    for where in wheres:
        for shard in (None, 0, 2):
            assert ids(index.search(q, 10, shard, where)) == exact(rows, q, 10, shard, where), (where, shard)
    assert index.search(q, 10, None, SearchFilter(object_ids=frozenset())) == []


PAYLOAD_IDS = [
    "b/docs/a.md",
    "b/docs/b.md",
    "b/docsX/c.md",
    "b/doc_s/d.md",  # "_" is a LIKE wildcard: prefix "doc_" must not take "docs/"
    "b/100%/e.md",
    "b/back\\slash/f.md",
    "b/back/g.md",
    "c/docs/h.md",
    "cb/docs/i.md",
    "c/x/docs/j.md",  # "docs/" after a slash but not at the key's start
]


def payload_corpus() -> list[VectorRow]:
    rng = np.random.default_rng(11)
    types = ["text/markdown", "image/png", "text/plain"]
    return [
        make_row(f"p{o:02d}-{c}", oid, unit(rng), o % SHARDS, c, content_type=types[o % 3], event_time_ms=1000 * o)
        for o, oid in enumerate(PAYLOAD_IDS)
        for c in range(2)
    ]


def test_filters_by_bucket_key_prefix_content_type_and_time(index: VectorIndex) -> None:
    rows = payload_corpus()
    index.upsert(rows)
    q = unit(np.random.default_rng(4))
    wheres = [
        SearchFilter(buckets=frozenset(["b"])),
        SearchFilter(buckets=frozenset(["c", "cb"]), key_prefix="docs/"),
        SearchFilter(key_prefix="docs/"),
        SearchFilter(key_prefix="doc_"),
        SearchFilter(buckets=frozenset(["b"]), key_prefix="100%"),
        SearchFilter(key_prefix="back\\"),
        SearchFilter(content_types=frozenset(["text/markdown", "text/plain"])),
        SearchFilter(event_time_from_ms=2000, event_time_to_ms=6000),
        SearchFilter(buckets=frozenset(["b"]), content_types=frozenset(["image/png"]), event_time_to_ms=9000),
    ]
    for where in wheres:
        for shard in (None, 1):
            found = ids(index.search(q, 5, shard, where))
            assert found == exact(rows, q, 5, shard, where), (where, shard)
            assert found or shard is not None, where  # each admits rows somewhere: empty would prove nothing
    by_id = {r.vector_id: r for r in rows}
    assert {by_id[v].object_id for v in ids(index.search(q, 30, None, SearchFilter(key_prefix="docs/")))} == {
        "b/docs/a.md",
        "b/docs/b.md",
        "c/docs/h.md",
        "cb/docs/i.md",
    }
    assert index.search(q, 10, None, SearchFilter(buckets=frozenset())) == []
    assert index.search(q, 10, None, SearchFilter(content_types=frozenset(["application/pdf"]))) == []


def test_shard_rows_give_every_row_of_a_shard_with_its_payload(index: VectorIndex) -> None:
    rows = payload_corpus()
    index.upsert(rows)
    index.delete([rows[0].vector_id])
    for shard in range(SHARDS):
        got = {r.vector_id: r for r in index.shard_rows(shard)}
        want = {r.vector_id: r for r in rows[1:] if r.shard == shard}
        assert set(got) == set(want), shard
        for vid, r in got.items():
            w = want[vid]
            assert (r.object_id, r.text, r.content_type, r.event_time_ms) == (
                w.object_id,
                w.text,
                w.content_type,
                w.event_time_ms,
            )


def test_replaying_the_same_records_changes_nothing(index: VectorIndex) -> None:
    rows = corpus(objects=9)
    q = unit(np.random.default_rng(3))

    def apply() -> None:
        index.upsert(rows)
        index.upsert([replace(rows[0], text="second version")])
        index.delete([rows[1].vector_id, rows[4].vector_id])

    apply()
    first = [(h.row.vector_id, round(h.score, 5), h.row.text) for h in index.search(q, 30)]
    count = index.count()
    apply()
    apply()
    assert index.count() == count == len(rows) - 2
    assert [(h.row.vector_id, round(h.score, 5), h.row.text) for h in index.search(q, 30)] == first
    assert next(r.text for r in index.rows_of(rows[0].object_id) if r.vector_id == rows[0].vector_id) == (
        "second version"
    )


def test_awkward_ids_and_texts_round_trip(index: VectorIndex) -> None:
    rng = np.random.default_rng(4)
    rows = [make_row(f"awk{i}", oid, unit(rng), 0, i, has_image=False) for i, oid in enumerate(AWKWARD_IDS)]
    rows = [replace(r, text=AWKWARD_TEXT + r.object_id, version=f'v"{i}\\\t') for i, r in enumerate(rows)]
    index.upsert(rows)
    for r in rows:
        (found,) = index.rows_of(r.object_id)
        assert (found.vector_id, found.object_id, found.text, found.version) == (
            r.vector_id,
            r.object_id,
            r.text,
            r.version,
        ), repr(r.object_id)
        (hit,) = index.search(r.vector, 1, 0, SearchFilter(object_ids=frozenset([r.object_id])))
        assert (hit.row.object_id, hit.row.text) == (r.object_id, r.text)
    index.delete([rows[3].vector_id])
    assert index.rows_of(AWKWARD_IDS[3]) == [] and len(index.rows_of(AWKWARD_IDS[4])) == 1


READERS = [("group:finance",), ("user:alice", "group:eng"), (), ("group:finance", "user:bob")]


def test_readers_filter_is_the_callers_exact_top_k(index: VectorIndex) -> None:
    """Document permissions: a restricted caller's top-k is the exact top-k of the rows it may read (a token in
    common with the row's readers), before ranking; an empty token set sees nothing, no condition sees all."""
    rows = [replace(r, readers=READERS[i // 3 % len(READERS)]) for i, r in enumerate(corpus())]
    index.upsert(rows)
    rng = np.random.default_rng(5)
    for tokens in ({"group:finance"}, {"user:alice"}, {"user:bob", "group:eng"}, {"group:nobody"}):
        where = SearchFilter(readers=frozenset(tokens))
        for _ in range(3):
            q = unit(rng)
            for shard in (None, 1):
                assert ids(index.search(q, 5, shard=shard, where=where)) == exact(rows, q, 5, shard, where), tokens
    assert index.search(unit(rng), 5, where=SearchFilter(readers=frozenset())) == []
    assert len(index.search(unit(rng), 500, where=NO_FILTER)) == len(rows)
    [row] = [r for r in index.rows_of(rows[0].object_id) if r.vector_id == rows[0].vector_id]
    assert row.readers == READERS[0]
    index.upsert([replace(r, readers=("user:carol",)) for r in rows if r.object_id == rows[0].object_id])
    carol = SearchFilter(readers=frozenset({"user:carol"}))
    assert {h.row.object_id for h in index.search(unit(rng), 50, where=carol)} == {rows[0].object_id}
    finance = SearchFilter(readers=frozenset({"group:finance"}))
    assert rows[0].object_id not in {h.row.object_id for h in index.search(unit(rng), 50, where=finance)}


def test_selective_readers_on_an_approximate_index_are_searched_exactly() -> None:
    """The flat-search cut-off: an HNSW index with 2,000 rows of which 1% are visible answers the exact top-k."""
    rng = np.random.default_rng(3)
    index = _faiss("hnsw", 1)
    rows = [
        make_row(f"v{i}", f"b/d{i}", unit(rng), 0, readers=("group:few",) if i % 100 == 0 else ("group:all",))
        for i in range(2000)
    ]
    index.upsert(rows)
    where = SearchFilter(readers=frozenset({"group:few"}))
    for _ in range(10):
        q = unit(rng)
        assert ids(index.search(q, 10, where=where)) == exact(rows, q, 10, None, where)
