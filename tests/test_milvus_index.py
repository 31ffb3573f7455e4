"""The Milvus adapter of VectorIndex against the session's milvus-lite server: idempotent upserts and deletes,
an object's rows, shard-filtered search, and several processes opening one collection at once."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mmrag.milvus_index import MilvusIndex
from mmrag.vector_index import VectorRow

pytestmark = pytest.mark.kafka  # uses the session infrastructure (milvus-lite server)


def row(vid: str, oid: str, shard: int, vec: list[float], chunk: int = 0) -> VectorRow:
    return VectorRow(
        vector_id=vid,
        object_id=oid,
        version="v1",
        chunk_index=chunk,
        shard=shard,
        vector=np.asarray(vec, dtype=np.float32),
        text=f"text of {vid}",
        has_text=True,
    )


def test_upsert_delete_rows_and_shard_search(infra, unique: str) -> None:  # type: ignore[no-untyped-def]
    index = MilvusIndex(infra.milvus_uri, f"c{unique}", 4, alias=f"c{unique}_live")
    index.start()
    rows = [row("a", "b/x", 0, [1, 0, 0, 0]), row("b", "b/x", 0, [0, 1, 0, 0], 1), row("c", "b/y", 1, [0.9, 0.1, 0, 0])]
    index.upsert(rows)
    index.upsert(rows)  # redelivery
    assert index.count() == 3
    assert sorted(r.vector_id for r in index.rows_of("b/x")) == ["a", "b"]
    np.testing.assert_allclose(next(r for r in index.rows_of("b/x") if r.vector_id == "b").vector, [0, 1, 0, 0])
    assert [h.row.vector_id for h in index.search(np.array([1, 0, 0, 0]), 5)] == ["a", "c", "b"]
    assert [h.row.vector_id for h in index.search(np.array([1, 0, 0, 0]), 5, shard=1)] == ["c"]
    hit = index.search(np.array([1, 0, 0, 0]), 1, shard=0)[0]
    assert hit.score == pytest.approx(1.0) and hit.row.text == "text of a" and hit.row.object_id == "b/x"
    index.delete(["a", "b"])
    index.delete(["a"])  # again: harmless
    assert index.rows_of("b/x") == [] and index.count() == 1


def test_processes_opening_one_collection_at_once_all_succeed(infra, unique: str) -> None:  # type: ignore[no-untyped-def]
    code = (
        "from mmrag.milvus_index import MilvusIndex\n"
        f"i = MilvusIndex({infra.milvus_uri!r}, 'race{unique}', 8, alias='race{unique}_live')\n"
        "i.start()\nprint(i._alias_target())"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120)[0].strip().splitlines()[-1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    assert outputs == [f"race{unique}"] * 4


class MadeBeforeKeywords(MilvusIndex):
    """The collection as this adapter made it before keyword search moved into Milvus: no keyword or BM25 field."""

    def _create(self) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=32)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        for name in ("object_id", "version", "text", "content_type"):
            schema.add_field(name, DataType.VARCHAR, max_length=2048)
        for name in ("chunk_index", "shard", "char_start", "char_end", "page", "event_time_ms", "indexed_at_ms"):
            schema.add_field(name, DataType.INT64)
        schema.add_field("has_text", DataType.BOOL)
        schema.add_field("has_image", DataType.BOOL)
        index = self.client.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="IP")
        self.client.create_collection(self.collection, schema=schema, index_params=index)


def test_a_collection_made_before_its_bm25_field_keeps_working_with_the_side_index(infra, unique: str) -> None:  # type: ignore[no-untyped-def]
    from consumers.retrieval_worker.keyword import KeywordShard
    from mmrag.errors import PermanentError
    from mmrag.keyword_index import KeywordSupport
    from mmrag.vector_index import NO_FILTER

    MadeBeforeKeywords(infra.milvus_uri, f"old{unique}", 4).start()
    index = MilvusIndex(infra.milvus_uri, f"old{unique}", 4)  # as a worker opens it today
    index.start()
    assert index.keyword_support() is KeywordSupport.NONE
    index.upsert([row("alpha", "b/x", 0, [1, 0, 0, 0]), row("beta", "b/y", 0, [0, 1, 0, 0])])
    assert [h.row.vector_id for h in index.search(np.array([1, 0, 0, 0]), 1, shard=0)] == ["alpha"]
    with pytest.raises(PermanentError, match="no BM25 field"):
        index.keyword_search("text", 5, 0)
    keywords = KeywordShard(index, 0, refresh_s=3600)
    keywords.start()
    try:
        assert [h.row.vector_id for h in keywords.search("beta", 5, NO_FILTER)] == ["beta"]  # the side index
    finally:
        keywords.close()
    fresh = MilvusIndex(infra.milvus_uri, f"new{unique}", 4)
    fresh.start()
    assert fresh.keyword_support() is KeywordSupport.STORE
