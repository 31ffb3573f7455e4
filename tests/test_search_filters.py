"""Search and Ask filters: the public Filter checked field by field (an invalid one names its field), turned into the
SearchRequest fields the retrieval workers apply, and the content type a row keeps for them."""

from __future__ import annotations

import pytest

from index_updater.fusion import plan_update
from mmrag.pb.events_pb2 import Chunk, EmbeddingBatch, Modality, SearchRequest
from mmrag.pb.query_pb2 import Filter
from mmrag.space import EmbeddingSpace
from mmrag.vector_log import from_record, to_record
from query_service.callers import ANONYMOUS
from query_service.filters import FilterError, scope_of

pytestmark = pytest.mark.unit


def test_a_valid_filter_becomes_the_request_fields() -> None:
    f = Filter(
        buckets=["docs-1", "docs-1", "img.bucket"],
        key_prefix="reports/2026 ",
        modality="Image",
        content_types=["Text/Markdown; charset=utf-8", "image/png"],
        event_time_from_ms=1000,
        event_time_to_ms=2000,
        object_ids=['docs-1/a "b"\t.md'],
    )
    request = scope_of(f, raw_chunks=True, caller=ANONYMOUS).fill(SearchRequest(top_k=3))
    assert list(request.buckets) == ["docs-1", "img.bucket"]  # duplicates dropped, order kept
    assert (request.key_prefix, request.modality, request.raw_chunks) == (
        "reports/2026 ",
        Modality.MODALITY_IMAGE,
        True,
    )
    assert list(request.content_types) == ["text/markdown", "image/png"]
    assert (request.event_time_from_ms, request.event_time_to_ms, request.top_k) == (1000, 2000, 3)
    assert list(request.object_ids) == ['docs-1/a "b"\t.md']
    empty = scope_of(Filter(), caller=ANONYMOUS).fill(SearchRequest())
    assert empty == SearchRequest()  # no filter, per object: nothing set


@pytest.mark.parametrize(
    ("f", "field"),
    [
        (Filter(buckets=["ok-bucket", "Bad_Bucket"]), "filter.buckets[1]"),
        (Filter(buckets=["x"]), "filter.buckets[0]"),
        (Filter(modality="video"), "filter.modality"),
        (Filter(content_types=["markdown"]), "filter.content_types[0]"),
        (Filter(event_time_from_ms=-5), "filter.event_time_from_ms"),
        (Filter(event_time_from_ms=2000, event_time_to_ms=2000), "filter.event_time_to_ms"),
        (Filter(object_ids=["no-slash"]), "filter.object_ids[0]"),
        (Filter(object_ids=["bucket/"]), "filter.object_ids[0]"),
        (Filter(key_prefix="k" * 1025), "filter.key_prefix"),
        (Filter(object_ids=[f"b/{i}" for i in range(1001)]), "filter.object_ids"),
    ],
)
def test_an_invalid_filter_names_its_field(f: Filter, field: str) -> None:
    with pytest.raises(FilterError) as caught:
        scope_of(f, caller=ANONYMOUS)
    assert caught.value.field == field and str(caught.value).startswith(f"{field}: ")


def test_rows_keep_the_media_type_of_their_object_through_vectors_v1() -> None:
    space = EmbeddingSpace("text@1", 2, "clip@1", 2, 0.8, 0.6)
    batch = EmbeddingBatch(
        object_id="b/notes.txt",
        version="v1",
        modality=Modality.MODALITY_TEXT,
        content_type="Text/Plain; charset=utf-16le",
        chunks=[Chunk(index=0, text="hi", vector=[1.0, 0.0])],
    )
    (row,) = plan_update(batch, [], space, shards=1, now_ms=1).upserts
    assert row.content_type == "text/plain"
    assert from_record(to_record(row, space.id)).content_type == "text/plain"
