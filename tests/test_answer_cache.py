"""The Ask answer cache's logic on both stores (in process, and a real redis-server): the similarity threshold, the
scope, the TTL, an entry dropped when a source's index status changes (and only then), entries stored only when
their sources are what the index holds, lookups that never serve an entry this replica cannot check, what is
cacheable, and Redis' size bound and failure (a miss, never an error)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from mmrag.pb.events_pb2 import IndexState, IndexStatus, SearchHit
from mmrag.pb.query_pb2 import AskFinal, AskResponse, AskSource, AskSources
from mmrag.text_encoder import MiniLMEncoder
from query_service.answer_cache import PENDING_S, AnswerCache, AnswerStore, MemoryAnswerStore, cacheable, unit
from query_service.answer_entry import CachedAnswer
from query_service.answer_store_redis import RedisAnswerStore
from query_service.ask import Asker, AskLimits
from query_service.filters import Scope
from query_service.index_changes import IndexedObjects
from query_service.llm_breaker import LlmBreaker
from query_service.types import SearchOutcome, ShardHit
from tests.test_ask_guardrails import CHOIR, Generation

pytestmark = pytest.mark.unit
DIM = 16
T0 = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.ms = T0 + 10_000

    def __call__(self) -> int:
        return self.ms


def indexed(oid: str, version: str, at_ms: int, state: int = IndexState.INDEX_STATE_INDEXED) -> IndexStatus:
    return IndexStatus(object_id=oid, version=version, indexed_at_ms=at_ms, state=state)  # type: ignore[arg-type]


def answered(*objects: tuple[str, str]) -> tuple[AskSources, AskFinal]:
    sources = AskSources(
        sources=[AskSource(number=n, object_id=oid, version=v) for n, (oid, v) in enumerate(objects, 1)]
    )
    final = AskFinal(answer=f"From {objects[0][0]} [1].", citations=[sources.sources[0]])
    return sources, final


def close_to(vector: np.ndarray, cosine: float, seed: int = 1) -> np.ndarray:
    """A unit vector at exactly ``cosine`` to unit ``vector``."""
    other = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    other -= other @ vector * vector
    other /= np.linalg.norm(other)
    return unit(cosine * vector + np.sqrt(1 - cosine**2) * other)


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[AnswerCache]:
    store: AnswerStore
    if request.param == "memory":
        store = MemoryAnswerStore(100)
    else:
        store = RedisAnswerStore(request.getfixturevalue("redis_url"), f"test:{uuid.uuid4().hex}:", 100)
    yield AnswerCache(store, similarity=0.97, ttl_s=60, clock_ms=Clock())


def put(cache: AnswerCache, vector: np.ndarray, scope: str = "s", *objects: tuple[str, str]) -> bool:
    objects = objects or (("b/doc.md", "v1"),)
    for oid, version in objects:
        cache.on_index_status(indexed(oid, version, T0))
    sources, final = answered(*objects)
    return cache.store_answer(vector, scope, sources, final, asked_ms=T0 + 1)


def test_a_question_this_close_in_the_same_scope_gets_the_answer(cache: AnswerCache) -> None:
    q = unit(np.random.default_rng(0).standard_normal(DIM))
    assert cache.lookup(q, "s") is None
    assert put(cache, q, "s", ("b/doc.md", "v1"), ("b/other.md", "v7"))
    hit = cache.lookup(close_to(q, 0.98), "s")
    assert hit is not None and hit.objects == {"b/doc.md": ("v1", T0), "b/other.md": ("v7", T0)}
    assert AskFinal.FromString(hit.final).answer == "From b/doc.md [1]."
    assert [s.object_id for s in AskSources.FromString(hit.sources).sources] == ["b/doc.md", "b/other.md"]
    assert cache.lookup(close_to(q, 0.96), "s") is None, "under the threshold"
    assert cache.lookup(q, "other-scope") is None, "another space, filter or limit"


def test_the_closest_entry_answers(cache: AnswerCache) -> None:
    q = unit(np.random.default_rng(0).standard_normal(DIM))
    near = close_to(q, 0.985, seed=2)
    assert put(cache, q, "s", ("b/a.md", "v1")) and put(cache, near, "s", ("b/b.md", "v1"))
    hit = cache.lookup(close_to(near, 0.999, seed=3), "s")
    assert hit is not None and list(hit.objects) == ["b/b.md"]


def test_an_entry_expires_after_the_ttl(cache: AnswerCache) -> None:
    q = unit(np.ones(DIM))
    assert put(cache, q)
    cache.clock_ms.ms += 59_000  # type: ignore[attr-defined]
    assert cache.lookup(q, "s") is not None
    cache.clock_ms.ms += 2_000  # type: ignore[attr-defined]
    assert cache.lookup(q, "s") is None
    assert cache.store.citing("b/doc.md") == [], "an expired entry is dropped when met"


def test_a_source_indexed_again_or_deleted_drops_the_entry(cache: AnswerCache) -> None:
    q, r = unit(np.ones(DIM)), unit(np.arange(DIM, dtype=np.float32))
    assert put(cache, q, "s", ("b/doc.md", "v1")) and put(cache, r, "s", ("b/keep.md", "v1"))
    cache.on_index_status(indexed("b/doc.md", "v1", T0))  # a replayed status it was answered from
    cache.on_index_status(indexed("b/doc.md", "v0", T0 - 5))  # an older one
    cache.on_index_status(indexed("b/doc.md", "v9", T0 + 50, IndexState.INDEX_STATE_SKIPPED))  # changed nothing
    assert cache.lookup(q, "s") is not None
    cache.on_index_status(indexed("b/doc.md", "v2", T0 + 100))  # overwritten
    assert cache.store.citing("b/doc.md") == [] and cache.lookup(q, "s") is None
    assert cache.lookup(r, "s") is not None, "an entry without that source stays"
    cache.on_index_status(indexed("b/keep.md", "v1", T0 + 200, IndexState.INDEX_STATE_DELETED))
    assert cache.lookup(r, "s") is None


def test_the_same_version_indexed_again_drops_the_entry(cache: AnswerCache) -> None:
    """The image half of a version arriving after its text half changes the object's rows."""
    q = unit(np.ones(DIM))
    assert put(cache, q)
    cache.on_index_status(indexed("b/doc.md", "v1", T0 + 100))
    assert cache.lookup(q, "s") is None


def test_an_answer_is_stored_only_from_what_the_index_holds(cache: AnswerCache) -> None:
    q = unit(np.ones(DIM))
    sources, final = answered(("b/doc.md", "v1"))
    cache.on_index_status(indexed("b/doc.md", "v1", T0 + 5))
    assert not cache.store_answer(q, "s", sources, final, T0 + 1), "indexed after the Ask began"
    cache.on_index_status(indexed("b/doc.md", "v2", T0 + 6))
    assert not cache.store_answer(q, "s", sources, final, T0 + 10), "retrieved v1, the index holds v2 since then"
    cache.on_index_status(indexed("b/doc.md", "v1", T0 + 20, IndexState.INDEX_STATE_DELETED))
    assert not cache.store_answer(q, "s", sources, final, T0 + 30), "v1 deleted since"
    cache.on_index_status(indexed("b/doc.md", "v1", T0 + 40))
    assert cache.lookup(q, "s") is None, "nothing refused was kept waiting"
    assert cache.store_answer(q, "s", sources, final, T0 + 50)
    assert cache.lookup(q, "s") is not None


def test_an_answer_waits_for_the_status_of_a_source_not_read_yet(cache: AnswerCache) -> None:
    """Search finds an object's rows before its INDEXED status is out: the answer is stored when the status comes
    and agrees, and never when it does not (a later version, a deletion, indexed after the Ask began, too late)."""
    q, other = unit(np.ones(DIM)), close_to(unit(np.ones(DIM)), 0.5)
    sources, final = answered(("b/doc.md", "v1"), ("b/two.md", "w1"))
    cache.on_index_status(indexed("b/doc.md", "v0", T0 - 100))
    assert not cache.store_answer(q, "s", sources, final, T0 + 1), "neither source's status read yet"
    cache.on_index_status(indexed("b/doc.md", "v1", T0))
    assert cache.lookup(q, "s") is None, "b/two.md still unknown"
    cache.on_index_status(indexed("b/two.md", "w1", T0 - 1))
    assert cache.lookup(q, "s") is not None, "stored once both statuses were read"

    refused = answered(("b/new.md", "n1"))
    assert not cache.store_answer(other, "t", *refused, T0 + 1)
    cache.on_index_status(indexed("b/new.md", "n1", T0 + 2))
    cache.on_index_status(indexed("b/new.md", "n1", T0))
    assert cache.lookup(other, "t") is None, "indexed after the Ask began: refused, not kept waiting"

    assert not cache.store_answer(other, "u", *answered(("b/late.md", "l1")), T0 + 1)
    assert isinstance(cache.clock_ms, Clock)
    cache.clock_ms.ms += PENDING_S * 1000 + 1
    cache.on_index_status(indexed("b/late.md", "l1", T0))
    assert cache.lookup(other, "u") is None, "waited longer than PENDING_S"


def test_entries_from_another_replica_are_served_only_when_checked(cache: AnswerCache) -> None:
    """A replica still reading index-status.v1 (or behind on an object) serves nothing and drops nothing."""
    q = unit(np.ones(DIM))
    assert put(cache, q)
    lagging = AnswerCache(cache.store, 0.97, 60, IndexedObjects(), clock_ms=cache.clock_ms)
    assert lagging.lookup(q, "s") is None, "the source is unknown here"
    lagging.on_index_status(indexed("b/doc.md", "v0", T0 - 10))
    assert lagging.lookup(q, "s") is None, "here the source is older than the entry's"
    lagging.on_index_status(indexed("b/doc.md", "v1", T0))
    assert lagging.lookup(q, "s") is not None and cache.lookup(q, "s") is not None
    loading = AnswerCache(cache.store, 0.97, 60, lagging.objects, ready=lambda: False, clock_ms=cache.clock_ms)
    loading.on_index_status(indexed("b/doc.md", "v2", T0 + 100))
    assert loading.lookup(q, "s") is None and cache.lookup(q, "s") is not None, "nothing dropped while loading"


def test_what_is_cacheable() -> None:
    sources, final = answered(("b/doc.md", "v1"))
    assert cacheable(sources, final)
    for flag in ("partial", "from_cache"):
        s = AskSources()
        s.CopyFrom(sources)
        setattr(s, flag, True)
        assert not cacheable(s, final), flag
    keyword = AskSources(sources=sources.sources, degraded="keyword")
    assert not cacheable(keyword, final)
    assert not cacheable(sources, AskFinal(answer="x", citations=final.citations, is_degraded=True))
    assert not cacheable(sources, AskFinal(answer="not cited"))
    assert not cacheable(AskSources(), final)


def test_an_entry_round_trips_through_bytes() -> None:
    sources, final = answered(("b/doc.md", "v1"))
    entry = CachedAnswer("s", unit(np.ones(DIM)), 42, {"b/doc.md": ("v1", 7)}, sources.SerializeToString(), b"f")
    back = CachedAnswer.from_bytes(entry.to_bytes())
    assert (back.scope, back.stored_at_ms, back.objects, back.sources, back.final) == (
        "s",
        42,
        entry.objects,
        entry.sources,
        b"f",
    )
    assert np.array_equal(back.vector, entry.vector) and back.id == entry.id


def test_redis_keeps_at_most_size_entries(redis_url: str) -> None:
    store = RedisAnswerStore(redis_url, f"test:{uuid.uuid4().hex}:", 3)
    cache = AnswerCache(store, 0.97, 60, clock_ms=Clock())
    vectors = [unit(np.eye(DIM, dtype=np.float32)[i]) for i in range(5)]
    for i, v in enumerate(vectors):
        cache.clock_ms.ms += 1  # type: ignore[attr-defined]
        assert put(cache, v, "s", (f"b/{i}.md", "v1"))
    assert [cache.lookup(v, "s") is not None for v in vectors] == [False, False, True, True, True]
    assert len(store.candidates("s")) == 3 and store.citing("b/0.md") == []


def test_redis_down_is_a_miss_not_an_error() -> None:
    from local_stack.processes import free_port

    store = RedisAnswerStore(f"redis://127.0.0.1:{free_port()}/0", "test:", 10)
    cache = AnswerCache(store, 0.97, 60, clock_ms=Clock())
    q = unit(np.ones(DIM))
    assert cache.lookup(q, "s") is None
    assert not put(cache, q)
    cache.on_index_status(indexed("b/doc.md", "v2", T0 + 100))  # logged, not raised


class Encoder:
    """Query vectors from the question's bytes (case-blind); the real MiniLM for the support check's sentences."""

    minilm = MiniLMEncoder()

    def encode(self, text: str, image: bytes) -> np.ndarray:
        return unit(np.frombuffer(text.lower().encode()[:DIM].ljust(DIM), dtype=np.uint8).astype(np.float32))

    def minilm_sentences(self, sentences: list[str]) -> np.ndarray:
        if not self.minilm.is_warm:
            self.minilm.warm_up()
        return np.asarray(self.minilm.encode(sentences))


class Search:
    space_id, shards, space_name = "space-1", 1, ""

    def search(self, vector: object, top_k: int, timeout: float, text: str, scope: object = None) -> SearchOutcome:
        hit = SearchHit(vector_id="b/choir#0", object_id="b/choir", version="v1", score=0.9, text=CHOIR, has_text=True)
        return SearchOutcome([ShardHit(hit, 0)], [], [])


def make_asker(min_score: float, generation: Generation, cache: AnswerCache) -> Asker:
    limits = AskLimits(2.0, 10.0, 5, 2, 64, min_score)
    return Asker(limits, Encoder(), Search(), generation, LlmBreaker(3, 10.0), None, None, cache)  # type: ignore[arg-type]


def ask(asker: Asker, question: str, scope: Scope | None = None) -> list[AskResponse]:
    return list(asker.ask(question, 5, 0, None, scope=scope))


def test_ask_answers_a_close_question_from_the_cache_without_generating() -> None:
    generation = Generation(["The choir has 42 members [1]."])
    cache = AnswerCache(MemoryAnswerStore(10), 0.97, 60)
    cache.on_index_status(indexed("b/choir", "v1", 1))
    asker = make_asker(0.3, generation, cache)
    first = ask(asker, "How many members has the choir?")
    again = ask(asker, "HOW MANY members has the choir?")  # the same vector: this Encoder ignores case
    assert len(generation.requests) == 1, "the second Ask generated nothing"
    assert [e.WhichOneof("event") for e in again] == ["sources", "delta", "final"]
    assert again[0].sources.from_cache and again[2].final.from_cache and not first[-1].final.from_cache
    assert again[1].delta.text == again[2].final.answer == first[-1].final.answer == "The choir has 42 members. [1]"
    assert [c.object_id for c in again[2].final.citations] == ["b/choir"]
    ask(asker, "How many members has the choir?", Scope(buckets=("b",)))
    assert len(generation.requests) == 2, "another filter is another scope"
    cache.on_index_status(indexed("b/choir", "v2", 2))
    assert not ask(asker, "How many members has the choir?")[-1].final.from_cache, "the source changed"


def test_ask_never_caches_a_degraded_or_not_found_answer() -> None:
    generation = Generation(["The capital of Zentara is New Zentra [4]."])  # ungrounded: degraded
    cache = AnswerCache(MemoryAnswerStore(10), 0.97, 60)
    cache.on_index_status(indexed("b/choir", "v1", 1))
    asker = make_asker(0.3, generation, cache)
    assert ask(asker, "Capital of Zentara?")[-1].final.degraded_reason == "ungrounded"
    assert not ask(asker, "Capital of Zentara?")[-1].final.from_cache and len(generation.requests) == 2
    not_found = make_asker(0.95, generation, cache)
    ask(not_found, "Anything?")
    assert not ask(not_found, "Anything?")[-1].final.from_cache
    assert cache.store.citing("b/choir") == []


def test_keyword_hits_of_a_version_the_index_no_longer_holds_are_dropped() -> None:
    """A shard's keyword index lags its vector index by up to its refresh: Search drops what index-status.v1 says
    was overwritten or deleted, and keeps what it does not know."""
    from mmrag.pb.events_pb2 import SearchReply
    from query_service.search import without_superseded

    objects = IndexedObjects()
    objects.observe(indexed("b/new.md", "v2", T0))
    objects.observe(indexed("b/gone.md", "v1", T0, IndexState.INDEX_STATE_DELETED))
    reply = SearchReply(
        shard=1,
        hits=[
            SearchHit(vector_id="old", object_id="b/new.md", version="v1"),
            SearchHit(vector_id="new", object_id="b/new.md", version="v2"),
            SearchHit(vector_id="gone", object_id="b/gone.md", version="v1"),
            SearchHit(vector_id="unknown", object_id="b/other.md", version="v3"),
        ],
    )
    kept = without_superseded(reply, objects)
    assert [h.vector_id for h in kept.hits] == ["new", "unknown"] and kept.shard == 1
    assert len(reply.hits) == 4, "the reply itself is left as it came"
