"""Merging shard replies, chunking by the model's tokenizer, and generated code being current."""

from __future__ import annotations

import pytest

from consumers.text_embedder.chunking import chunk_text
from local_stack import protogen
from mmrag.pb.events_pb2 import SearchHit, SearchReply
from mmrag.text_encoder import MiniLMEncoder
from query_service.search import merge_top_k

pytestmark = pytest.mark.unit


def reply(shard: int, *scored: tuple[str, float]) -> SearchReply:
    return SearchReply(shard=shard, hits=[SearchHit(vector_id=v, object_id=f"b/{v}", score=s) for v, s in scored])


def test_merge_top_k_orders_by_score_and_keeps_each_vector_once() -> None:
    merged = merge_top_k([reply(0, ("a", 0.9), ("b", 0.5)), reply(1, ("c", 0.7), ("a", 0.95))], 3)
    assert [(h.hit.vector_id, h.shard) for h in merged] == [("a", 1), ("c", 1), ("b", 0)]
    assert merge_top_k([], 5) == []


def test_chunks_fit_the_window_overlap_and_point_back_into_the_text() -> None:
    tokenizer = MiniLMEncoder().load_tokenizer()
    text = " ".join(f"token{i}" for i in range(400))
    chunks = chunk_text(text, tokenizer, max_tokens=64, overlap=8)
    assert len(chunks) > 3 and [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert text[c.char_start : c.char_end] == c.text
        assert len(tokenizer(c.text)["input_ids"]) <= 64
    assert chunks[1].char_start < chunks[0].char_end  # overlap
    assert chunks[-1].char_end == len(text)
    assert chunk_text("   ", tokenizer) == []


def test_generated_protobuf_code_is_current() -> None:
    assert protogen.stale_files() == [], "run `mmrag proto generate` and commit the result"
