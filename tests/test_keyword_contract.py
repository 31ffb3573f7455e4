"""One contract for the keyword searches an index answers itself (``KeywordSearcher``): Milvus' BM25 over its
keyword field (on the session's milvus-lite server) and the in-process keyword index a Faiss shard changes with its
vectors. Identifiers whole and in parts, best first, per shard, every filter, no tokens no answer, and a delete or
an overwrite counts at the next search, not at a rebuild."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np
import pytest

from mmrag.keyword_index import KeywordIndex, KeywordSupport
from mmrag.vector_index import NO_FILTER, Hit, SearchFilter, VectorRow

DIM = 4
DOCS = [  # vector id, object id, shard, text, content type, event time
    ("solar", "b/docs/solar.md", 0, "Inverter fault F-2307 means grid overvoltage.", "text/markdown", 1000),
    ("fault", "b/docs/fault.txt", 0, "Inverter fault F-4102 is an insulation fault.", "text/plain", 2000),
    ("kafka", "b/notes/kafka.md", 0, "Set min.cleanable.dirty.ratio to compact sooner.", "text/markdown", 3000),
    ("git", "c/docs/git.md", 0, "Clone with GIT_LFS_SKIP_SMUDGE=1 to skip large files.", "text/markdown", 4000),
    ("copy", "c/docs/solar-copy.md", 1, "Inverter fault F-2307 again, on shard one.", "text/markdown", 5000),
    ("quote", 'c/q"uote\\d.md', 1, 'Quotes " and \\ backslashes around F-2307.', "text/markdown", 6000),
]


class KeywordStore(Protocol):
    def upsert(self, rows: Sequence[VectorRow]) -> None: ...

    def delete(self, vector_ids: Sequence[str]) -> None: ...

    def keyword_support(self) -> KeywordSupport: ...

    def keyword_search(
        self, text: str, top_k: int, shard: int | None = None, where: SearchFilter = NO_FILTER
    ) -> list[Hit]: ...


class InProcess:
    """A keyword index per shard, changed as a Faiss shard changes its own (``apply`` with each batch)."""

    def __init__(self) -> None:
        self.shards: defaultdict[int, KeywordIndex] = defaultdict(KeywordIndex)

    def upsert(self, rows: Sequence[VectorRow]) -> None:
        for row in rows:
            self.shards[row.shard].apply(upserts=[row])

    def delete(self, vector_ids: Sequence[str]) -> None:
        for index in self.shards.values():
            index.apply(deletes=vector_ids)

    def keyword_support(self) -> KeywordSupport:
        return KeywordSupport.IN_PROCESS

    def keyword_search(
        self, text: str, top_k: int, shard: int | None = None, where: SearchFilter = NO_FILTER
    ) -> list[Hit]:
        assert shard is not None, "a worker searches its own shard"
        return self.shards[shard].search(text, top_k, where)


@pytest.fixture(
    params=[pytest.param("in-process", marks=pytest.mark.unit), pytest.param("milvus", marks=pytest.mark.kafka)]
)
def store(request: pytest.FixtureRequest, unique: str) -> Iterator[KeywordStore]:
    if request.param == "milvus":
        from mmrag.milvus_index import MilvusIndex

        infra = request.getfixturevalue("infra")
        index = MilvusIndex(infra.milvus_uri, f"keywords{unique}", DIM, alias=f"keywords{unique}_live")
        index.start()
        yield index
        index.close()
    else:
        yield InProcess()


def doc_rows() -> list[VectorRow]:
    rows = [
        VectorRow(
            vid, oid, "v1", 0, shard, np.ones(DIM, np.float32), text, has_text=True, content_type=ct, event_time_ms=at
        )  # fmt: skip
        for vid, oid, shard, text, ct, at in DOCS
    ]
    rows.append(VectorRow("png", "b/img/f-2307.png", "v1", 0, 0, np.ones(DIM, np.float32), "", has_image=True))
    return rows


def found(store: KeywordStore, text: str, shard: int = 0, top_k: int = 10, **where: object) -> list[str]:
    hits = store.keyword_search(text, top_k, shard, SearchFilter(**where))  # type: ignore[arg-type]
    scores = [h.score for h in hits]
    assert all(s > 0 for s in scores) and scores == sorted(scores, reverse=True), scores
    return [h.row.vector_id for h in hits]


def test_identifiers_rank_first_per_shard(store: KeywordStore) -> None:
    store.upsert(doc_rows())
    assert store.keyword_support() is not KeywordSupport.NONE
    assert found(store, "F-2307") == ["solar"]  # shard 0 only; the image has no text
    assert sorted(found(store, "f-2307", shard=1)) == ["copy", "quote"]
    assert found(store, "F-2307 inverter fault") == ["solar", "fault"]  # the exact code outranks its words
    assert found(store, "min.cleanable.dirty.ratio") == ["kafka"]
    assert found(store, "cleanable") == ["kafka"]  # an identifier's words are tokens too
    assert found(store, "GIT_LFS_SKIP_SMUDGE") == ["git"]
    assert found(store, "inverter") == ["fault", "solar"]  # the same word in fewer words weighs more
    assert found(store, "what is it") == [] and found(store, "") == [] and found(store, "nothing here") == []


def test_filters_hold_for_keyword_searches(store: KeywordStore) -> None:
    store.upsert(doc_rows())
    assert found(store, "inverter fault", buckets=frozenset(["c"]), shard=1) == ["copy"]
    assert found(store, "inverter fault", buckets=frozenset(["c"])) == []
    assert sorted(found(store, "inverter fault", key_prefix="docs/")) == ["fault", "solar"]
    assert found(store, "inverter fault", key_prefix="docs/s") == ["solar"]
    assert found(store, "inverter fault", buckets=frozenset(["b"]), key_prefix="docs/f") == ["fault"]
    assert found(store, "fault", content_types=frozenset(["text/plain"])) == ["fault"]
    assert found(store, "fault", content_types=frozenset()) == []
    assert found(store, "fault", object_ids=frozenset(["b/docs/solar.md", "b/missing"])) == ["solar"]
    assert found(store, "fault", event_time_from_ms=1500) == ["fault"]
    assert found(store, "fault", event_time_to_ms=1500) == ["solar"]
    assert found(store, "F-2307", has_image=True) == []
    assert found(store, "f-2307", object_ids=frozenset(['c/q"uote\\d.md']), shard=1) == ["quote"]


def test_deletes_and_overwrites_count_at_the_next_search(store: KeywordStore) -> None:
    rows = doc_rows()
    store.upsert(rows)
    assert found(store, "F-2307") == ["solar"]
    store.delete(["solar"])
    assert found(store, "F-2307") == [] and found(store, "overvoltage") == []
    store.delete(["solar"])  # again: harmless
    copy = next(r for r in rows if r.vector_id == "copy")
    store.upsert([replace(copy, version="v2", text="Cello tuning pegs slip in dry air.")])
    hits = store.keyword_search("cello pegs", 5, 1)
    assert [(h.row.vector_id, h.row.version, h.row.text) for h in hits] == [
        ("copy", "v2", "Cello tuning pegs slip in dry air.")
    ]
    assert found(store, "F-2307", shard=1) == ["quote"]  # the old words are gone with the old version
    store.upsert([replace(copy, version="v3", text="", has_text=False, has_image=True)])
    assert found(store, "cello", shard=1) == []


def test_readers_hold_for_keyword_searches_before_ranking(store: KeywordStore) -> None:
    """A caller's keyword list holds only rows it may read, the best of those (not the best rows, filtered)."""
    readers = {"solar": ("group:finance",), "fault": ("user:alice",), "kafka": ("group:finance", "user:bob")}
    store.upsert([replace(r, readers=readers.get(r.vector_id, ())) for r in doc_rows()])
    assert found(store, "inverter fault", readers=frozenset({"group:finance"})) == ["solar"]
    assert found(store, "inverter fault", readers=frozenset({"user:alice"})) == ["fault"]
    assert found(store, "inverter fault", top_k=1, readers=frozenset({"user:alice", "group:finance"})) == ["fault"]
    assert found(store, "inverter fault", readers=frozenset({"user:carol"})) == []
    assert found(store, "inverter fault", readers=frozenset()) == []
    assert found(store, "cleanable", readers=frozenset({"user:bob"})) == ["kafka"]
