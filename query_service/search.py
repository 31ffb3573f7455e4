"""Scatter a query to every shard through search.requests.v1, gather replies until the deadline, merge top-k."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter, Histogram

from mmrag.messages import now_ms
from mmrag.metrics import LATENCY_BUCKETS
from mmrag.pb.events_pb2 import SearchHit, SearchReply, SearchRequest
from query_service.reply_client import Route

log = logging.getLogger(__name__)

SEARCH_SECONDS = Histogram("mmrag_search_seconds", "Search latency end to end", buckets=LATENCY_BUCKETS)
PARTIAL = Counter("mmrag_search_partial_total", "Searches answered without every shard")
EMPTY = Counter("mmrag_search_empty_total", "Searches that retrieved nothing")


@dataclass(frozen=True)
class ShardHit:
    hit: SearchHit
    shard: int


@dataclass(frozen=True)
class SearchOutcome:
    hits: list[ShardHit]
    missing_shards: list[int]
    errors: list[str]

    @property
    def partial(self) -> bool:
        return bool(self.missing_shards)


def merge_top_k(replies: list[SearchReply], top_k: int) -> list[ShardHit]:
    """Best ``top_k`` hits over all shard replies by score (ties by vector_id), each vector once."""
    best: dict[str, ShardHit] = {}
    for reply in replies:
        for hit in reply.hits:
            seen = best.get(hit.vector_id)
            if seen is None or hit.score > seen.hit.score:
                best[hit.vector_id] = ShardHit(hit, reply.shard)
    return sorted(best.values(), key=lambda h: (-h.hit.score, h.hit.vector_id))[:top_k]


class ShardedSearch:
    def __init__(self, route: Route, space_id: str, shards: int) -> None:
        self.route = route
        self.space_id = space_id
        self.shards = shards

    def search(self, vector: np.ndarray, top_k: int, timeout_s: float, query_text: str = "") -> SearchOutcome:
        """Never raises for slow shards: whatever answered in time is merged and the rest listed as missing."""
        start = time.monotonic()
        cid = uuid.uuid4().hex
        request = SearchRequest(
            correlation_id=cid, space_id=self.space_id, query_vector=vector.tolist(), top_k=top_k, query_text=query_text
        )
        replies: list[SearchReply] = []
        with self.route.send(cid, request, now_ms() + int(timeout_s * 1000)) as pending:
            while len(replies) < self.shards:
                reply = pending.next(start + timeout_s)
                if reply is None:
                    break
                replies.append(reply)  # type: ignore[arg-type]
        answered = {r.shard for r in replies if not r.error}
        outcome = SearchOutcome(
            hits=merge_top_k([r for r in replies if not r.error], top_k),
            missing_shards=sorted(set(range(self.shards)) - answered),
            errors=[f"shard {r.shard}: {r.error}" for r in replies if r.error],
        )
        SEARCH_SECONDS.observe(time.monotonic() - start)
        if outcome.partial:
            PARTIAL.inc()
        if not outcome.hits:
            EMPTY.inc()
        return outcome
