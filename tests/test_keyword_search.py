"""The keyword side of retrieval: identifier-aware BM25 over a shard's chunk text (bm25s), answered by the retrieval
worker for keyword requests and kept answering from its last build when the vector index fails; the query side
flags an answer that came from keyword indexes alone as degraded."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import bm25s
import numpy as np
import pytest

from consumers.retrieval_worker.handler import RetrievalWorker, RetrievalWorkerSettings
from consumers.retrieval_worker.keyword import MIN_REFRESH_S, KeywordShard, KeywordUnavailableError
from mmrag import keyword_index
from mmrag.errors import RetryableError
from mmrag.faiss_index import FaissIndex, FaissSettings
from mmrag.keyword_index import KeywordIndex, KeywordSupport, analyzer_text, keyword_tokens
from mmrag.messages import Envelope, now_ms
from mmrag.milvus_index import fit_tokens
from mmrag.pb.events_pb2 import SearchHit, SearchList, SearchReply, SearchRequest
from mmrag.request_reply import ReplyAddress
from mmrag.vector_index import NO_FILTER, Hit, SearchFilter, VectorRow
from query_service.fusion import JointFusion
from query_service.search import list_replies, outcome_of
from tests.kafka_tools import wait_for

pytestmark = pytest.mark.unit
DIM = 4
TEXTS = {
    "b/solar.md": "Inverter fault F-2307 means grid overvoltage; F-4102 is an insulation fault.",
    "b/kafka.md": "Set min.cleanable.dirty.ratio to compact sooner; consumer groups share partitions.",
    "b/git.md": "Clone with GIT_LFS_SKIP_SMUDGE=1 to skip the large files.",
    "c/solar-copy.md": "Inverter fault F-2307 again, in another bucket.",
}


def rows() -> list[VectorRow]:
    rng = np.random.default_rng(3)
    made = [
        VectorRow(f"v{i}", oid, "v1", 0, 0, rng.standard_normal(DIM).astype(np.float32), text, has_text=True)
        for i, (oid, text) in enumerate(TEXTS.items())
    ]
    made.append(VectorRow("img", "b/shape.png", "v1", 0, 0, np.ones(DIM, dtype=np.float32), "", has_image=True))
    return made


def test_tokens_keep_identifiers_whole_and_in_parts() -> None:
    assert keyword_tokens("Error F-2307, see min.cleanable.dirty.ratio and E0502") == [
        "error",
        "2307",
        "f-2307",
        "see",
        "min",
        "cleanable",
        "dirty",
        "ratio",
        "min.cleanable.dirty.ratio",
        "e0502",
    ]
    assert keyword_tokens("How is it done, and what-is-it?") == ["done", "what-is-it"]  # stop words out, codes whole


def test_tokens_for_a_word_tokenizer_keep_identifiers_whole() -> None:
    assert analyzer_text("Error F-2307, see min.cleanable.dirty.ratio, a/b:c") == (
        "error 2307 f_2307 see min cleanable dirty ratio min_cleanable_dirty_ratio a_b_c"
    )
    assert analyzer_text("How is it?") == ""
    assert fit_tokens("alpha beta gamma", 12) == "alpha beta"  # never a token cut short
    assert fit_tokens("alpha beta gamma", 10) == "alpha beta" and fit_tokens("ab", 10) == "ab"
    assert fit_tokens("über alles", 6) == "über" and len(fit_tokens("é" * 40_000, 65535).encode()) <= 65535


def test_bm25_finds_exact_identifiers_within_filters() -> None:
    index = KeywordIndex()
    assert index.rebuild(rows()) == 4  # the image has no text
    assert {h.row.object_id for h in index.search("F-2307", 5)} == {"b/solar.md", "c/solar-copy.md"}
    assert [h.row.object_id for h in index.search("min.cleanable.dirty.ratio", 5)] == ["b/kafka.md"]
    assert [h.row.object_id for h in index.search("GIT_LFS_SKIP_SMUDGE", 5)] == ["b/git.md"]
    assert [h.row.object_id for h in index.search("F-2307", 5, SearchFilter(buckets=frozenset(["c"])))] == [
        "c/solar-copy.md"
    ]
    assert index.search("nothing matches this", 5) == [] and index.search("", 5) == []
    index.rebuild([r for r in rows() if r.object_id != "b/git.md"])  # a rebuild is the whole truth: deletes too
    assert index.search("GIT_LFS_SKIP_SMUDGE", 5) == []


def corpus(n: int, seed: int) -> list[VectorRow]:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(300)] + ["F-2307", "min.cleanable.dirty.ratio", "the", "is"]
    weights = 1 / np.arange(1, len(words) + 1)
    texts = [" ".join(rng.choice(words, int(rng.integers(1, 40)), p=weights / weights.sum())) for _ in range(n)]
    empty = np.empty(0, dtype=np.float32)
    return [VectorRow(f"v{i}", f"b/o{i % 50}", "v1", i % 3, 0, empty, t, has_text=True) for i, t in enumerate(texts)]


def test_scores_are_bm25s_scores_and_changes_count_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The incremental index scores as bm25s (Lucene's BM25, k1 1.5, b 0.75) over the rows it holds; after upserts,
    overwrites and deletes one by one it answers what a build of the rows left gives, compactions included."""
    monkeypatch.setattr(keyword_index, "_MIN_COMPACT", 16)
    builds: list[int] = []
    build = keyword_index._built
    monkeypatch.setattr(keyword_index, "_built", lambda rows: builds.append(1) or build(rows))
    rows = corpus(400, 1)
    index = KeywordIndex()
    index.rebuild(rows[:100])
    held = {r.vector_id: r for r in rows[:100]}
    rng = np.random.default_rng(2)
    for step, row in enumerate(rows[100:]):
        gone = [f"v{int(i)}" for i in rng.choice(100 + step, 3)]
        renamed = replace(row, vector_id=f"v{int(rng.integers(0, 100 + step))}")  # an overwrite, often
        index.apply(upserts=[renamed], deletes=gone)
        for vid in gone:
            held.pop(vid, None)
        held[renamed.vector_id] = renamed
    assert len(index) == len(held) and len(builds) > 2  # the first build, then compactions
    reference = bm25s.BM25()
    kept = list(held.values())
    reference.index([keyword_tokens(r.text) for r in kept], show_progress=False)
    rebuilt = KeywordIndex()
    rebuilt.rebuild(kept)
    for query in ["w1 w2", "w7 F-2307", "min.cleanable.dirty.ratio w0 w0", "w299"]:
        want = reference.get_scores(keyword_tokens(query))
        by_vid = {kept[i].vector_id: float(want[i]) for i in np.flatnonzero(want > 0)}
        for searched in (index, rebuilt):
            got = {h.row.vector_id: h.score for h in searched.search(query, 1000)}
            assert got.keys() == by_vid.keys()
            assert [got[v] for v in by_vid] == pytest.approx(list(by_vid.values()), rel=1e-5)
    assert index.search("w1", 5, SearchFilter(object_ids=frozenset(["b/o7"]))) == rebuilt.search(
        "w1", 5, SearchFilter(object_ids=frozenset(["b/o7"]))
    )


def test_apply_overwrites_deletes_and_drops_rows_left_without_text() -> None:
    index = KeywordIndex()
    index.rebuild(rows())
    solar = rows()[0]
    index.apply(upserts=[replace(solar, version="v2", text="Cello tuning pegs slip in dry air.")])
    assert [(h.row.object_id, h.row.version) for h in index.search("cello", 5)] == [("b/solar.md", "v2")]
    assert [h.row.object_id for h in index.search("F-2307", 5)] == ["c/solar-copy.md"]
    index.apply(upserts=[replace(solar, version="v3", text="", has_text=False, has_image=True)])
    assert index.search("cello", 5) == [] and len(index) == 3
    index.apply(deletes=["v3", "unknown"])  # c/solar-copy.md; an unknown id is fine
    assert index.search("F-2307", 5) == [] and len(index) == 2


class InStore(FaissIndex):
    """An index whose store searches keywords itself (as Milvus): it fails like an unreachable Milvus when down."""

    down = False
    searched = 0

    def keyword_support(self) -> KeywordSupport:
        return KeywordSupport.STORE

    def keyword_search(
        self, text: str, top_k: int, shard: int | None = None, where: SearchFilter = NO_FILTER
    ) -> list[Hit]:
        if self.down:
            raise RetryableError("milvus", "keyword search", "unreachable", "check Milvus")
        self.searched += 1
        mine = KeywordIndex()
        mine.rebuild(self.shard_rows(shard or 0))
        return mine.search(text, top_k, where)


def test_the_store_answers_keywords_and_the_side_index_only_while_it_fails() -> None:
    index = InStore(DIM, FaissSettings(faiss_gpu="off"))
    index.upsert(rows())
    shard = KeywordShard(index, 0, refresh_s=3600)
    shard.start()
    try:
        cello = VectorRow("new", "b/cello.md", "v1", 0, 0, np.ones(DIM, np.float32), "Cello tuning", has_text=True)
        index.upsert([cello])  # the side index is built and does not hold it: the store answers
        assert [h.row.vector_id for h in shard.search("cello", 5, NO_FILTER)] == ["new"] and index.searched == 1
        index.down = True
        assert shard.search("cello", 5, NO_FILTER) == []  # the side index, as old as its last build
        assert [h.row.object_id for h in shard.search("F-2307", 1, SearchFilter(buckets=frozenset(["c"])))] == [
            "c/solar-copy.md"
        ]
    finally:
        shard.close()
    unbuilt = KeywordShard(index, 0, refresh_s=3600)
    with pytest.raises(KeywordUnavailableError, match="side index is not built yet"):
        unbuilt.search("cello", 5, NO_FILTER)


class FailingAfterStart(FaissIndex):
    """A vector index that answers shard_rows once, then fails like an unreachable Milvus."""

    down = False

    def search(self, *args: object, **kwargs: object) -> list[Hit]:
        if self.down:
            raise RetryableError("milvus", "search", "unreachable", "check Milvus")
        return super().search(*args, **kwargs)  # type: ignore[arg-type]

    def shard_rows(self, shard: int) -> Iterator[VectorRow]:
        if self.down:
            raise RetryableError("milvus", "rows", "unreachable", "check Milvus")
        return super().shard_rows(shard)

    def rows_version(self) -> int | None:
        return None  # as Milvus: every refresh reads the rows


def ask(worker: RetrievalWorker, request: SearchRequest) -> SearchReply:
    address = ReplyAddress("c1", "replies", 0, now_ms() + 60_000)
    (result,) = worker.handle([Envelope("c1", request, address.headers(), "requests", 0, 0, 0)])
    assert not isinstance(result, Exception)
    (output,) = result
    assert isinstance(output.value, SearchReply)
    return output.value


def test_the_worker_answers_keyword_requests_and_keeps_them_when_the_vector_index_fails() -> None:
    index = FailingAfterStart(DIM, FaissSettings(faiss_gpu="off"))
    index.upsert(rows())
    worker = RetrievalWorker(RetrievalWorkerSettings(shard=0, keyword_refresh_s=3600), "space", index)
    worker.warm_up()
    by_keyword = SearchRequest(space_id="space", top_k=3, query_text="GIT_LFS_SKIP_SMUDGE", keyword=True)
    by_vector = SearchRequest(space_id="space", top_k=3, query_vector=np.ones(DIM).tolist())
    assert [h.object_id for h in ask(worker, by_keyword).hits] == ["b/git.md"]
    assert len(ask(worker, by_vector).hits) == 3
    index.down = True
    assert worker.keywords is not None and not worker.keywords.refresh()  # the last build stays
    failed = ask(worker, by_vector)
    assert "unreachable" in failed.error and not failed.hits
    assert [h.object_id for h in ask(worker, by_keyword).hits] == ["b/git.md"]
    no_keywords = RetrievalWorker(RetrievalWorkerSettings(shard=0, keyword_refresh_s=0), "space", index)
    assert "no keyword index" in ask(no_keywords, by_keyword).error


def test_a_keyword_shard_rebuilds_only_when_its_rows_changed() -> None:
    index = FaissIndex(DIM, FaissSettings(faiss_gpu="off"))
    index.upsert(rows())
    shard = KeywordShard(index, 0, refresh_s=3600)
    assert shard.refresh() and shard.search("F-2307", 5, NO_FILTER)
    built_at = shard.built_at
    assert shard.refresh() and shard.built_at == built_at  # nothing changed: the build stays, no CPU spent
    index.delete(["v0"])  # b/solar.md
    assert shard.refresh() and shard.built_at > built_at
    assert {h.row.object_id for h in shard.search("F-2307", 5, NO_FILTER)} == {"c/solar-copy.md"}


def test_a_shard_that_reports_its_changes_has_a_new_row_in_its_keyword_index_within_seconds() -> None:
    index = FaissIndex(DIM, FaissSettings(faiss_gpu="off"))
    index.upsert(rows())
    shard = KeywordShard(index, 0, refresh_s=3600)  # the ceiling: an index that cannot report changes waits this
    shard.start()
    try:
        assert shard.next_wait_s() == MIN_REFRESH_S  # a build of 4 rows is far under 1/10 of a second
        cello = VectorRow("new", "b/cello.md", "v1", 0, 0, np.ones(DIM, np.float32), "Cello tuning", has_text=True)
        index.upsert([cello])
        found = wait_for(lambda: shard.search("cello", 5, NO_FILTER), 10, "the new row in the keyword index")
        assert [h.row.vector_id for h in found] == ["new"]
    finally:
        shard.close()


def test_one_request_carries_every_list_and_each_list_answers_or_fails_alone() -> None:
    index = FailingAfterStart(DIM, FaissSettings(faiss_gpu="off"))
    index.upsert(rows())
    worker = RetrievalWorker(RetrievalWorkerSettings(shard=0, keyword_refresh_s=3600), "space", index)
    worker.warm_up()
    lists = [
        SearchList(name="text", query_vector=np.ones(DIM).tolist()),
        SearchList(name="keyword", keyword=True),
    ]
    request = SearchRequest(space_id="space", top_k=3, query_text="F-2307", lists=lists, buckets=["b"])
    answered = ask(worker, request)
    assert [part.name for part in answered.lists] == ["text", "keyword"] and not answered.hits
    assert [h.object_id for h in answered.lists[1].hits] == ["b/solar.md"]  # the filter holds for every list
    assert all(h.object_id.startswith("b/") for h in answered.lists[0].hits) and len(answered.lists[0].hits) == 3
    index.down = True
    failed = ask(worker, request)
    assert "unreachable" in failed.lists[0].error and not failed.lists[0].hits
    assert [h.object_id for h in failed.lists[1].hits] == ["b/solar.md"] and not failed.lists[1].error
    by_list = list_replies(request, [failed, SearchReply(shard=1, error="space unavailable")])
    assert [(r.shard, bool(r.error), len(r.hits)) for r in by_list["text"]] == [(0, True, 0), (1, True, 0)]
    assert [(r.shard, bool(r.error), len(r.hits)) for r in by_list["keyword"]] == [(0, False, 1), (1, True, 0)]
    old_worker = list_replies(request, [SearchReply(shard=0, hits=failed.lists[1].hits)])  # answers no list
    assert all("did not answer list" in got[0].error for got in old_worker.values())


def reply(shard: int, *oids: str, error: str = "") -> SearchReply:
    hits = [SearchHit(object_id=o, vector_id=o, score=1.0 - i / 10, has_text=True) for i, o in enumerate(oids)]
    return SearchReply(shard=shard, hits=hits, error=error)


def test_an_answer_from_keyword_indexes_alone_is_degraded() -> None:
    fine = {"joint": [reply(0, "b/a"), reply(1, "b/b")], "keyword": [reply(0, "b/k"), reply(1)]}
    outcome = outcome_of(fine, JointFusion(), np.zeros(2), 5, raw_chunks=False, shards=2)
    assert (outcome.degraded, outcome.missing_shards) == ("", [])
    assert [h.hit.object_id for h in outcome.hits] == ["b/a", "b/b"]
    down = {"joint": [reply(0, error="milvus down"), reply(1, error="milvus down")], "keyword": [reply(0, "b/k")]}
    outcome = outcome_of(down, JointFusion(), np.zeros(2), 5, raw_chunks=False, shards=2)
    assert (outcome.degraded, outcome.missing_shards) == ("keyword", [1])
    assert [h.hit.object_id for h in outcome.hits] == ["b/k"]
