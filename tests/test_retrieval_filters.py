"""A retrieval worker applies a request's filters (object ids, modality) on its shard, whichever index it holds;
a query of another space gets an error reply. The handler runs over a Faiss index here (no broker needed: the
handler is plain logic over envelopes; the request-reply path itself is tested in test_faiss_shards)."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.retrieval_worker.handler import RetrievalWorker, RetrievalWorkerSettings
from mmrag.faiss_index import FaissIndex, FaissSettings
from mmrag.messages import Envelope, now_ms
from mmrag.pb.events_pb2 import Modality, SearchList, SearchReply, SearchRequest
from mmrag.request_reply import ReplyAddress
from mmrag.vector_index import VectorRow

pytestmark = pytest.mark.unit
DIM = 6
ROWS = [
    VectorRow("t1", 'b/a "quoted"\t.txt', "v1", 0, 1, np.eye(DIM, dtype=np.float32)[0], "text", has_text=True),
    VectorRow("t2", "b/ünï.txt", "v1", 0, 1, np.eye(DIM, dtype=np.float32)[1], "text", has_text=True),
    VectorRow("i1", "b/img.png", "v1", 0, 1, np.eye(DIM, dtype=np.float32)[2], has_image=True),
    VectorRow(
        "ti", "b/both.png", "v1", 0, 1, np.ones(DIM, dtype=np.float32) / DIM, "ocr", has_text=True, has_image=True
    ),
]


def ask(worker: RetrievalWorker, **fields: object) -> SearchReply:
    address = ReplyAddress("c1", "replies", 0, now_ms() + 60_000)
    fields = {"query_vector": np.ones(DIM).tolist(), "top_k": 10, **fields}
    request = SearchRequest(correlation_id="c1", **fields)  # type: ignore[arg-type]
    (result,) = worker.handle([Envelope("c1", request, address.headers(), "requests", 0, 0, 0)])
    assert not isinstance(result, Exception)
    (output,) = result
    assert isinstance(output.value, SearchReply)
    return output.value


def test_request_filters_reach_the_index() -> None:
    index = FaissIndex(DIM, FaissSettings(faiss_gpu="off"))
    index.upsert(ROWS)
    worker = RetrievalWorker(RetrievalWorkerSettings(shard=1), "space", index)
    assert {h.vector_id for h in ask(worker, space_id="space").hits} == {"t1", "t2", "i1", "ti"}
    only = ask(worker, space_id="space", object_ids=['b/a "quoted"\t.txt', "b/img.png", "b/absent"])
    assert {h.vector_id for h in only.hits} == {"t1", "i1"}
    assert {h.vector_id for h in ask(worker, space_id="space", modality=Modality.MODALITY_TEXT).hits} == {
        "t1",
        "t2",
        "ti",
    }
    assert {h.vector_id for h in ask(worker, space_id="space", modality=Modality.MODALITY_IMAGE).hits} == {"i1", "ti"}
    other = ask(worker, space_id="other")
    assert other.error and not other.hits


def test_each_list_ranks_only_the_rows_of_its_half() -> None:
    # a joint layout of 3 text dims + 3 image dims; the query's image half points away from every image (cosines
    # below 0), so text rows (image half 0) would outrank every image in an unfiltered image list
    index = FaissIndex(DIM, FaissSettings(faiss_gpu="off"))
    texts = [
        VectorRow(f"t{i}", f"b/t{i}.txt", "v1", 0, 1, np.eye(DIM, dtype=np.float32)[i % 3], "t", has_text=True)
        for i in range(12)
    ]
    image = np.zeros(DIM, dtype=np.float32)
    image[3:] = -1 / np.sqrt(3)
    images = [VectorRow(f"i{i}", f"b/i{i}.png", "v1", 0, 1, image, has_image=True) for i in range(3)]
    index.upsert(texts + images)
    worker = RetrievalWorker(RetrievalWorkerSettings(shard=1), "space", index)
    text_half, image_half = np.ones(DIM, dtype=np.float32), np.ones(DIM, dtype=np.float32)
    text_half[3:], image_half[:3] = 0, 0
    lists = [
        SearchList(name="text", query_vector=text_half.tolist(), half=Modality.MODALITY_TEXT),
        SearchList(name="clip", query_vector=image_half.tolist(), half=Modality.MODALITY_IMAGE),
        SearchList(name="joint", query_vector=image_half.tolist()),  # no half: every row
    ]
    reply = ask(worker, space_id="space", top_k=5, lists=lists)
    by_name = {answer.name: [h.vector_id for h in answer.hits] for answer in reply.lists}
    assert len(by_name["text"]) == 5 and all(v.startswith("t") for v in by_name["text"])
    assert sorted(by_name["clip"]) == ["i0", "i1", "i2"]
    assert len(by_name["joint"]) == 5 and all(v.startswith("t") for v in by_name["joint"])
