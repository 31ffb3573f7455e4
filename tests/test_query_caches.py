"""The query service's caches: LRU eviction, query vectors encoded once per distinct text or image, search answers
fresh within the TTL, the last complete answer given for a partial one within the stale window (flagged
from_cache), partial answers never kept."""

from __future__ import annotations

import numpy as np
import pytest

from mmrag.pb.events_pb2 import SearchHit
from query_service.caches import EmbeddingCache, Lru, ResultCache, digest
from query_service.filters import Scope
from query_service.types import SearchOutcome, ShardHit

pytestmark = pytest.mark.unit


def test_lru_keeps_the_most_recently_used() -> None:
    lru: Lru[str, int] = Lru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # a is now the most recent
    lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c"), len(lru)) == (1, None, 3, 2)
    off: Lru[str, int] = Lru(0)
    off.put("a", 1)
    assert off.get("a") is None


def test_digest_separates_parts() -> None:
    assert digest(b"ab", b"c") != digest(b"a", b"bc") != digest(b"abc")


def test_embedding_cache_encodes_each_text_and_image_once() -> None:
    cache = EmbeddingCache(8)
    calls: list[str] = []

    def encoder(name: str) -> tuple[np.ndarray, ...]:
        calls.append(name)
        return (np.full(3, len(calls), dtype=np.float32),)

    first = cache.text("red circle", lambda: encoder("t1"))
    again = cache.text("red circle", lambda: encoder("t2"))
    image = cache.image(b"red circle", lambda: encoder("i1"))  # same bytes as the text: another key
    assert calls == ["t1", "i1"]
    np.testing.assert_array_equal(first[0], again[0])
    assert image[0][0] == 2.0


def outcome(*oids: str, missing: tuple[int, ...] = ()) -> SearchOutcome:
    return SearchOutcome([ShardHit(SearchHit(object_id=o, score=0.5), 0) for o in oids], list(missing), [])


def test_result_cache_fresh_then_stale_then_gone() -> None:
    now = [100.0]
    cache = ResultCache(ttl_s=5, stale_s=60, size=16, clock=lambda: now[0])
    key = cache.key(np.ones(4), 10, Scope(), "joint")
    assert key != cache.key(np.ones(4), 10, Scope(key_prefix="a/"), "joint")
    assert key != cache.key(np.ones(4), 11, Scope(), "joint") != cache.key(np.ones(4), 10, Scope(), "modality")
    assert cache.fresh(key) is None
    cache.put(key, outcome("b/x", "b/y"), 0)
    hit = cache.fresh(key)
    assert hit is not None and hit.from_cache and [h.hit.object_id for h in hit.hits] == ["b/x", "b/y"]
    now[0] += 10
    assert cache.fresh(key) is None  # past the TTL: a search runs again
    stale = cache.stale(key)
    assert stale is not None and stale.from_cache and not stale.partial
    now[0] += 60
    assert cache.stale(key) is None


def test_a_result_computed_before_an_index_change_is_not_served_after_it() -> None:
    """Keyed by what it depends on, not by time: any index change (its status seen by the status view) may change
    any result, and one that came while the search ran makes that result stale at once."""
    changes = [0]
    cache = ResultCache(ttl_s=60, stale_s=60, size=16, changes=lambda: changes[0])
    key = cache.key(np.ones(4), 10, Scope(), "joint")
    cache.put(key, outcome("b/x"), changes_at_start=0)
    assert cache.fresh(key) is not None
    changes[0] += 1  # b/y indexed
    assert cache.fresh(key) is None
    cache.put(key, outcome("b/x"), changes_at_start=0)  # began before that change, finished after
    assert cache.fresh(key) is None
    cache.put(key, outcome("b/x", "b/y"), changes_at_start=1)
    assert cache.fresh(key) is not None


def test_partial_answers_are_never_kept() -> None:
    cache = ResultCache(ttl_s=5, stale_s=60, size=16)
    key = cache.key(np.ones(4), 10, Scope(), "joint")
    cache.put(key, outcome("b/x", missing=(1,)), 0)
    assert cache.fresh(key) is None and cache.stale(key) is None
