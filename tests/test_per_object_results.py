"""Results per object by default: a shard answers its top_k objects, each as its best chunk, however many chunks a
document has; raw_chunks gives chunks as before. Handler over a Faiss index (plain logic over envelopes)."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.retrieval_worker.handler import RetrievalWorker, RetrievalWorkerSettings
from consumers.retrieval_worker.per_object import best_per_object
from mmrag.faiss_index import FaissIndex, FaissSettings
from mmrag.messages import Envelope, now_ms
from mmrag.pb.events_pb2 import SearchHit, SearchReply, SearchRequest
from mmrag.request_reply import ReplyAddress
from mmrag.vector_index import Hit, VectorRow
from query_service.search import merge_per_object
from query_service.types import ShardHit

pytestmark = pytest.mark.unit
DIM = 8


def rows() -> list[VectorRow]:
    """'long' has 40 chunks all closer to the query than any other object; six short objects follow."""
    rng = np.random.default_rng(5)
    query = np.eye(DIM, dtype=np.float32)[0]
    made = []
    for c in range(40):
        v = query + 0.05 * rng.standard_normal(DIM).astype(np.float32)
        made.append(VectorRow(f"long-{c}", "b/long.md", "v1", c, 0, v / np.linalg.norm(v), f"chunk {c}", has_text=True))
    for o in range(6):
        v = np.eye(DIM, dtype=np.float32)[0] * (0.5 - 0.05 * o) + np.eye(DIM, dtype=np.float32)[1 + o]
        made.append(
            VectorRow(f"s{o}", f"b/short-{o}.md", "v1", 0, 0, v / np.linalg.norm(v), f"short {o}", has_text=True)
        )
    return made


def ask(worker: RetrievalWorker, **fields: object) -> SearchReply:
    address = ReplyAddress("c1", "replies", 0, now_ms() + 60_000)
    request = SearchRequest(correlation_id="c1", space_id="space", query_vector=np.eye(DIM)[0].tolist(), **fields)  # type: ignore[arg-type]
    (result,) = worker.handle([Envelope("c1", request, address.headers(), "requests", 0, 0, 0)])
    assert not isinstance(result, Exception)
    (output,) = result
    assert isinstance(output.value, SearchReply)
    return output.value


def test_a_shard_answers_objects_each_with_its_best_chunk_unless_raw_chunks() -> None:
    index = FaissIndex(DIM, FaissSettings(faiss_gpu="off"))
    made = rows()
    index.upsert(made)
    worker = RetrievalWorker(RetrievalWorkerSettings(shard=0), "space", index)
    grouped = ask(worker, top_k=5).hits
    assert [h.object_id for h in grouped] == ["b/long.md", *(f"b/short-{o}.md" for o in range(4))]
    query = np.eye(DIM, dtype=np.float32)[0]
    best_long = max((r for r in made if r.object_id == "b/long.md"), key=lambda r: float(r.vector @ query))
    assert (grouped[0].vector_id, grouped[0].text) == (best_long.vector_id, best_long.text)
    assert grouped[0].score == pytest.approx(float(best_long.vector @ query), abs=1e-5)
    raw = ask(worker, top_k=5, raw_chunks=True).hits
    assert {h.object_id for h in raw} == {"b/long.md"} and len(raw) == 5
    assert len(ask(worker, top_k=20).hits) == 7  # every object of the shard, fewer than asked


def test_grouping_asks_for_more_chunks_until_enough_objects_or_the_shard_is_exhausted() -> None:
    index = FaissIndex(DIM, FaissSettings(faiss_gpu="off"))
    index.upsert(rows())
    limits: list[int] = []

    def search(limit: int) -> list[Hit]:
        limits.append(limit)
        return index.search(np.eye(DIM, dtype=np.float32)[0], limit)

    assert len(best_per_object(search, 3)) == 3
    assert limits == [12, 24, 48]  # 40 chunks of one object come first: 12 and 24 chunks give 1 object
    limits.clear()
    assert len(best_per_object(search, 3, max_fetch=20)) == 1 and limits == [12, 20]  # capped: what it found


def test_query_side_merge_keeps_one_hit_per_object_best_first() -> None:
    def hit(oid: str, vid: str, score: float) -> ShardHit:
        return ShardHit(SearchHit(object_id=oid, vector_id=vid, score=score), 0)

    merged = merge_per_object([hit("b/x", "x1", 0.4), hit("b/y", "y1", 0.9), hit("b/x", "x2", 0.7)], 5)
    assert [(h.hit.object_id, h.hit.vector_id) for h in merged] == [("b/y", "y1"), ("b/x", "x2")]
