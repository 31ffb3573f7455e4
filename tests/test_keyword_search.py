"""The keyword side of retrieval: identifier-aware BM25 over a shard's chunk text (bm25s), answered by the retrieval
worker for keyword requests and kept answering from its last build when the vector index fails; the query side
flags an answer that came from keyword indexes alone as degraded."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from consumers.retrieval_worker.handler import RetrievalWorker, RetrievalWorkerSettings
from consumers.retrieval_worker.keyword import MIN_REFRESH_S, KeywordShard
from mmrag.errors import RetryableError
from mmrag.faiss_index import FaissIndex, FaissSettings
from mmrag.keyword_index import KeywordIndex, keyword_tokens
from mmrag.messages import Envelope, now_ms
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
