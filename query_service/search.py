"""Scatter a query to every shard through search.requests.v1, gather replies until the deadline, merge and fuse."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from opentelemetry import trace
from prometheus_client import Counter, Histogram

from mmrag.messages import now_ms
from mmrag.metrics import LATENCY_BUCKETS
from mmrag.pb.events_pb2 import SearchHit, SearchList, SearchReply, SearchRequest
from mmrag.tracing import span_attributes, trace_exemplar
from query_service.filters import Scope
from query_service.fusion import KEYWORD, Fusion, JointFusion, list_half
from query_service.reply_client import Route
from query_service.types import SearchOutcome, ShardHit

if TYPE_CHECKING:
    from query_service.caches import ResultCache
    from query_service.index_changes import IndexedObjects
    from query_service.shard_presence import ShardPresence

log = logging.getLogger(__name__)
TRACER = trace.get_tracer("query_service")

SEARCH_SECONDS = Histogram("mmrag_search_seconds", "Search latency end to end", buckets=LATENCY_BUCKETS)
PARTIAL = Counter("mmrag_search_partial_total", "Searches answered without every shard")
EMPTY = Counter("mmrag_search_empty_total", "Searches that retrieved nothing")
HIDDEN = Counter(
    "mmrag_search_hidden_hits_total", "Hits dropped: their object's newest status names readers the caller lacks"
)
SUPERSEDED = Counter(
    "mmrag_search_superseded_keyword_hits_total", "Keyword hits dropped: a version the index no longer holds"
)


def merge_top_k(replies: list[SearchReply], top_k: int) -> list[ShardHit]:
    """Best ``top_k`` hits over all shard replies by score (ties by vector_id), each vector once."""
    best: dict[str, ShardHit] = {}
    for reply in replies:
        for hit in reply.hits:
            seen = best.get(hit.vector_id)
            if seen is None or hit.score > seen.hit.score:
                best[hit.vector_id] = ShardHit(hit, reply.shard)
    return sorted(best.values(), key=lambda h: (-h.hit.score, h.hit.vector_id))[:top_k]


def merge_per_object(hits: Iterable[ShardHit], top_k: int) -> list[ShardHit]:
    """Best ``top_k`` objects by score (ties by object id), each as its best hit."""
    best: dict[str, ShardHit] = {}
    for h in hits:
        seen = best.get(h.hit.object_id)
        if seen is None or (h.hit.score, seen.hit.vector_id) > (seen.hit.score, h.hit.vector_id):
            best[h.hit.object_id] = h
    return sorted(best.values(), key=lambda h: (-h.hit.score, h.hit.object_id))[:top_k]


def merge_replies(replies: list[SearchReply], top_k: int, raw_chunks: bool) -> list[ShardHit]:
    """One list from every shard's answer to one request: chunks, or objects (each shard already grouped its own)."""
    chunks = merge_top_k(replies, len(replies) * max(top_k, 1))
    return chunks[:top_k] if raw_chunks else merge_per_object(chunks, top_k)


def search_request(
    fusion: Fusion,
    vector: np.ndarray,
    query_text: str,
    keyword: bool,
    top_k: int,
    space_id: str,
    scope: Scope,
    space_name: str = "",
) -> SearchRequest:
    """The one request of a search, naming the space (id and name) the shards search, with its lists: one per query
    vector the fusion ranks by, and with ``keyword`` (and a query text) the shards' keyword indexes."""
    queries = fusion.queries(vector)
    lists = [SearchList(name=name, query_vector=v.tolist(), half=list_half(name)) for name, v in queries.items()]
    if keyword and query_text.strip():
        lists.append(SearchList(name=KEYWORD, keyword=True))
    request = SearchRequest(space_id=space_id, space_name=space_name, top_k=top_k, query_text=query_text, lists=lists)
    return scope.fill(request)


def list_replies(request: SearchRequest, replies: Iterable[SearchReply]) -> dict[str, list[SearchReply]]:
    """Each list's shard replies, from the shards' replies to ``request`` (one per shard, a ``ListHits`` per list):
    a reply's own error is every list's; a list a reply lacks is that shard's error for it."""
    found: dict[str, list[SearchReply]] = {listed.name: [] for listed in request.lists}
    for reply in replies:
        answered = {listed.name: listed for listed in reply.lists}
        for name, got in found.items():
            part = answered.get(name)
            error = reply.error or (
                part.error
                if part is not None
                else f"shard {reply.shard} did not answer list {name!r} -> update the retrieval workers"
            )
            hits = part.hits if part is not None and not error else []
            got.append(
                SearchReply(
                    shard=reply.shard, space_id=reply.space_id, space_name=reply.space_name, hits=hits, error=error
                )
            )
    return found


def outcome_of(
    replies: dict[str, list[SearchReply]],
    fusion: Fusion,
    vector: np.ndarray,
    top_k: int,
    raw_chunks: bool,
    shards: int,
) -> SearchOutcome:
    """The answer from each list's shard replies: lists merged over the shards, then fused. A shard answered when
    it answered every vector list without an error, or the keyword list: when some shard answered only that (its
    vector index failed), the answer is ``degraded="keyword"``."""
    good = {name: [r for r in got if not r.error] for name, got in replies.items()}
    ok = {name: {r.shard for r in got} for name, got in good.items()}
    vector_sets = [s for name, s in ok.items() if name != KEYWORD]
    vector_ok = set.intersection(*vector_sets) if vector_sets else set()
    keyword_only = ok.get(KEYWORD, set()) - vector_ok
    lists = {name: merge_replies(got, top_k, raw_chunks) for name, got in good.items()}
    return SearchOutcome(
        hits=fusion.fuse(lists, top_k, not raw_chunks, vector),
        missing_shards=sorted(set(range(shards)) - vector_ok - keyword_only),
        errors=sorted({f"shard {r.shard}: {r.error}" for got in replies.values() for r in got if r.error}),
        degraded=KEYWORD if keyword_only else "",
    )


def without_hidden(reply: SearchReply, indexed: IndexedObjects, tokens: frozenset[str]) -> SearchReply:
    """A reply without the hits of objects whose newest index status names readers the caller shares no token with.
    The shards filtered before ranking; this catches what lags the status: a side keyword index (the fallback)
    built before a readers change, up to MMRAG_KEYWORD_REFRESH_S."""
    kept = [h for h in reply.hits if not indexed.hidden(h.object_id, tokens)]
    return _keeping(reply, kept, HIDDEN)


def without_superseded(reply: SearchReply, indexed: IndexedObjects) -> SearchReply:
    """A keyword reply without the hits of versions the index no longer holds (index-status.v1 says so): a shard's
    keyword index lags its vector index by up to its refresh, and an overwritten or deleted object must not come
    back from it."""
    kept = [h for h in reply.hits if not indexed.superseded(h.object_id, h.version)]
    return _keeping(reply, kept, SUPERSEDED)


def _keeping(reply: SearchReply, kept: list[SearchHit], dropped: Counter) -> SearchReply:
    """``reply`` with only the ``kept`` hits (itself when none was dropped); the dropped ones counted."""
    if len(kept) == len(reply.hits):
        return reply
    dropped.inc(len(reply.hits) - len(kept))
    pruned = SearchReply()
    pruned.CopyFrom(reply)
    del pruned.hits[:]
    pruned.hits.extend(kept)
    return pruned


class ShardedSearch:
    """Scatters a query to every shard through search.requests.v1 (one request holding every list the fusion ranks
    by), gathers the replies until the deadline, merges each list over the shards and fuses the lists. Every request
    names the space (``space_id``, ``space_name``) its vector was encoded in; a reply from another space counts as
    that shard's error (never merged)."""

    def __init__(
        self,
        route: Route,
        space_id: str,
        shards: int,
        fusion: Fusion | None = None,
        cache: ResultCache | None = None,
        keyword: bool = False,
        space_name: str = "",
        indexed: IndexedObjects | None = None,
        presence: ShardPresence | None = None,
    ) -> None:
        self.route = route
        self.space_id = space_id
        self.space_name = space_name
        self.shards = shards
        self.fusion = fusion or JointFusion()
        self.cache = cache
        self.keyword = keyword  # also rank by the shards' keyword indexes (hybrid; the fallback when vectors fail)
        self.indexed = indexed  # the index's current versions (status view): stale keyword hits are dropped
        self.presence = presence  # which shards have a worker: the others are missing at once, not at the deadline

    def search(
        self, vector: np.ndarray, top_k: int, timeout_s: float, query_text: str = "", scope: Scope | None = None
    ) -> SearchOutcome:
        """Never raises for slow shards: whatever answered in time is merged and the rest listed as missing (a
        shard is missing unless it answered every list). Without a scope: chunks (``raw_chunks``), no filter.
        With a result cache: a fresh cached answer comes back at once, and a partial answer is replaced by the last
        complete one within the stale window (both flagged ``from_cache``; the stale one still lists the shards that
        did not answer now, so a client tells a dead shard from a cache hit)."""
        scope = scope or Scope(raw_chunks=True)
        if self.cache is None:
            return self._search(vector, top_k, timeout_s, query_text, scope)
        key = self.cache.key(vector, top_k, scope, self.fusion.name)
        cached = self.cache.fresh(key)
        if cached is not None:
            return cached
        changes_at_start = self.cache.changes()
        outcome = self._search(vector, top_k, timeout_s, query_text, scope)
        if outcome.partial:
            stale = self.cache.stale(key)
            # the last complete answer stands in for the missing shards' part, and says which shards are missing
            return replace(stale, missing_shards=outcome.missing_shards, errors=outcome.errors) if stale else outcome
        if not outcome.degraded:
            self.cache.put(key, outcome, changes_at_start)
        return outcome

    def _search(self, vector: np.ndarray, top_k: int, timeout_s: float, query_text: str, scope: Scope) -> SearchOutcome:
        start = time.monotonic()
        request = search_request(
            self.fusion, vector, query_text, self.keyword, top_k, self.space_id, scope, self.space_name
        )
        with TRACER.start_as_current_span("retrieve", attributes=span_attributes(shards=self.shards)) as span:
            gathered = self._gather(request, start + timeout_s)
            span.set_attributes(span_attributes(lists=len(request.lists), replies=len(gathered)))
        replies = list_replies(request, gathered)
        if self.indexed is not None and KEYWORD in replies:
            replies[KEYWORD] = [without_superseded(r, self.indexed) for r in replies[KEYWORD]]
        if self.indexed is not None and scope.readers is not None:
            tokens = frozenset(scope.readers)
            replies = {name: [without_hidden(r, self.indexed, tokens) for r in got] for name, got in replies.items()}
        with TRACER.start_as_current_span("fuse", attributes=span_attributes(fusion=self.fusion.name)) as span:
            outcome = outcome_of(replies, self.fusion, vector, top_k, scope.raw_chunks, self.shards)
            span.set_attributes(span_attributes(hits=len(outcome.hits), missing_shards=len(outcome.missing_shards)))
        absent = sorted(self._absent() & set(outcome.missing_shards))
        if absent:
            why = [f"shard {k}: no retrieval worker (its consumer group has no member): not waited for" for k in absent]
            outcome = replace(outcome, errors=[*outcome.errors, *why])
        SEARCH_SECONDS.observe(time.monotonic() - start, trace_exemplar())
        if outcome.partial:
            PARTIAL.inc()
        if not outcome.hits:
            EMPTY.inc()
        return outcome

    def _gather(self, request: SearchRequest, deadline: float) -> list[SearchReply]:
        """Sends the request, then reads the shards' replies (one each) until ``deadline``."""
        deadline_ms = now_ms() + int(max(0.0, deadline - time.monotonic()) * 1000)
        request.correlation_id = uuid.uuid4().hex
        replies: list[SearchReply] = []
        expected = set(range(self.shards)) - self._absent()  # a shard without a worker is not waited for
        with self.route.send(request.correlation_id, request, deadline_ms) as waiting:
            while not expected <= {r.shard for r in replies}:
                reply = waiting.next(deadline)
                if reply is None:
                    break
                replies.append(self._same_space(reply))  # type: ignore[arg-type]
        return replies

    def _absent(self) -> frozenset[int]:
        return self.presence.absent if self.presence is not None else frozenset()

    def _same_space(self, reply: SearchReply) -> SearchReply:
        """``reply``, with an error when its hits come from another space than the query's (mixed spaces)."""
        if not reply.error and (reply.space_id, reply.space_name) != (self.space_id, self.space_name):
            reply.error = (
                f"shard {reply.shard} answered from space {reply.space_id}/{reply.space_name}, the query is of space "
                f"{self.space_id}/{self.space_name}: mixed spaces refused -> update the retrieval workers"
            )
        return reply
