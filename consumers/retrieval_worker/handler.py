"""Retrieval worker: one consumer group per shard answers search.requests.v1 from that shard of the index."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial

import numpy as np
from prometheus_client import Counter
from pydantic import Field

from consumers.retrieval_worker.keyword import KeywordShard, KeywordUnavailableError
from consumers.retrieval_worker.per_object import best_per_object
from consumers.retrieval_worker.spaces import ShardSpace, ShardSpaces, SpaceOpener, SpaceUnavailableError
from mmrag.errors import PermanentError, RetryableError
from mmrag.messages import Envelope, Output
from mmrag.pb.events_pb2 import Modality, SearchHit, SearchList, SearchReply, SearchRequest
from mmrag.request_reply import CORRELATION_ID, reply_address
from mmrag.runner import ItemResult
from mmrag.settings import BaseServiceSettings, SpaceSettings, VectorStoreSettings
from mmrag.vector_index import Hit, IndexSearcher, SearchFilter, media_type

log = logging.getLogger(__name__)
STAGE = "retrieval_worker"
# A shard's failures to answer, sent back as the reply's (or the list's) error: the query service degrades (keyword
# fallback, partial answer); nothing is retried here.
ANSWER_ERRORS = (SpaceUnavailableError, RetryableError, PermanentError, KeywordUnavailableError)
EXPIRED = Counter("mmrag_search_requests_expired_total", "Requests dropped because their deadline passed", ["shard"])


class RetrievalWorkerSettings(BaseServiceSettings, SpaceSettings, VectorStoreSettings):
    shard: int = 0
    max_wait_ms: int = Field(
        default=100, description="longest wait for the next request; a request is answered when it arrives (eager)"
    )
    max_top_k: int = 100
    keyword_refresh_s: float = Field(
        default=30.0,
        ge=0,
        description="seconds between rebuilds of the shard's keyword side index from Milvus' rows: the keyword list "
        "while Milvus is down, or of a collection made without its BM25 field (Milvus searches keywords itself, a "
        "Faiss shard changes its keyword index with its vectors); 0 = no keyword search",
    )

    @property
    def group(self) -> str:
        return f"retrieval-shard-{self.shard}"


def to_hit(hit: Hit) -> SearchHit:
    r = hit.row
    return SearchHit(
        vector_id=r.vector_id,
        object_id=r.object_id,
        version=r.version,
        score=hit.score,
        text=r.text,
        chunk_index=r.chunk_index,
        char_start=r.char_start,
        char_end=r.char_end,
        page=r.page,
        has_text=r.has_text,
        has_image=r.has_image,
    )


def request_filter(req: SearchRequest) -> SearchFilter:
    """The request's filters: object ids, the half its modality asks for, buckets, key prefix, content types,
    event-time range (an empty list or a 0 time = no condition) and, for a restricted caller, its reader tokens
    (none = no row): every index applies them before it ranks."""
    where = SearchFilter(
        object_ids=frozenset(req.object_ids) if req.object_ids else None,
        buckets=frozenset(req.buckets) if req.buckets else None,
        key_prefix=req.key_prefix,
        content_types=frozenset(media_type(t) for t in req.content_types) if req.content_types else None,
        event_time_from_ms=req.event_time_from_ms or None,
        event_time_to_ms=req.event_time_to_ms or None,
        readers=frozenset(req.reader_tokens) if req.restricted else None,
    )
    return with_half(where, req.modality)


def with_half(where: SearchFilter, half: int) -> SearchFilter:
    """``where`` also asking for rows with the ``half`` (a Modality) they must have: text, an image, or any."""
    if half == Modality.MODALITY_TEXT:
        return replace(where, has_text=True)
    if half == Modality.MODALITY_IMAGE:
        return replace(where, has_image=True)
    return where


def search_shard(
    index: IndexSearcher,
    req: SearchRequest,
    shard: int,
    max_top_k: int,
    keywords: KeywordShard | None = None,
    listed: SearchList | None = None,
) -> list[Hit]:
    """One shard's answer to a request: its ``top_k`` best objects (each its best chunk), or with ``raw_chunks``
    its ``top_k`` best chunks, within the request's filters; by the query vector, or with ``keyword`` by the
    keyword index over ``query_text`` (``listed``: one of the request's lists, whose vector or keyword flag
    counts instead). Raises RetryableError (the index) or KeywordUnavailableError."""
    top_k = max(1, min(req.top_k or 10, max_top_k))
    where = request_filter(req)
    keyword, query_vector = (
        (listed.keyword, listed.query_vector) if listed is not None else (req.keyword, req.query_vector)
    )
    if listed is not None:
        where = with_half(where, listed.half)
    search: Callable[[int], list[Hit]]
    if keyword:
        if keywords is None:
            raise KeywordUnavailableError(f"shard {shard} keeps no keyword index (MMRAG_KEYWORD_REFRESH_S=0)")
        search = partial(keywords.search, req.query_text, where=where)
    else:
        vector = np.asarray(query_vector, dtype=np.float32)
        search = partial(index.search, vector, shard=shard, where=where)
    return search(top_k) if req.raw_chunks else best_per_object(search, top_k)


def answer_into(
    reply: SearchReply,
    index: IndexSearcher,
    keywords: KeywordShard | None,
    req: SearchRequest,
    shard: int,
    max_top_k: int,
) -> None:
    """The shard's answer to ``req`` in ``reply``: for a request with lists, one ``ListHits`` per list in its order
    (each its hits or its error); else the single list's hits (or the reply's error)."""
    if not req.lists:
        try:
            reply.hits.extend(to_hit(h) for h in search_shard(index, req, shard, max_top_k, keywords))
        except ANSWER_ERRORS as exc:
            reply.error = str(exc)
        return
    for listed in req.lists:
        answer = reply.lists.add(name=listed.name)
        try:
            answer.hits.extend(to_hit(h) for h in search_shard(index, req, shard, max_top_k, keywords, listed))
        except ANSWER_ERRORS as exc:
            answer.error = str(exc)


def keyword_shard(settings: RetrievalWorkerSettings, index: IndexSearcher) -> KeywordShard | None:
    refresh = settings.keyword_refresh_s
    return KeywordShard(index, settings.shard, refresh) if refresh > 0 else None


class RetrievalWorker:
    stage = STAGE

    def __init__(
        self, settings: RetrievalWorkerSettings, space_id: str, index: IndexSearcher, opener: SpaceOpener | None = None
    ) -> None:
        """``index``: the shard of the worker's own space (``space_id``, MMRAG_SPACE_NAME); ``opener`` opens the
        index of another space a request names (None: such requests are refused)."""
        self.settings = settings
        self.space_id = space_id
        self.index = index
        self.keywords = keyword_shard(settings, index)
        self.spaces = ShardSpaces(ShardSpace(space_id, settings.space_name, index, self.keywords), opener)

    def warm_up(self) -> None:
        self.spaces.start()

    def handle(self, batch: Sequence[Envelope[SearchRequest]]) -> list[ItemResult]:
        return [self._answer(env) for env in batch]

    def _answer(self, env: Envelope[SearchRequest]) -> ItemResult:
        address = reply_address(env.headers)
        if address is None or env.value is None:
            return PermanentError(
                STAGE,
                f"request {env.key}",
                "no reply address headers or empty body",
                "send correlation_id, reply_topic, reply_partition and deadline_ms headers",
            )
        if address.expired:
            EXPIRED.labels(str(self.settings.shard)).inc()
            return []  # the caller gave up already; answering would only fill its reply partition
        req = env.value
        reply = SearchReply(
            correlation_id=address.correlation_id,
            shard=self.settings.shard,
            space_id=req.space_id,
            space_name=req.space_name,
        )
        try:
            space = self.spaces.get(req.space_id, req.space_name)
        except ANSWER_ERRORS as exc:
            reply.error = str(exc)  # every list's: the query service degrades (partial); no retry here
        else:
            answer_into(reply, space.index, space.keywords, req, self.settings.shard, self.settings.max_top_k)
        return [
            Output(
                address.topic,
                address.correlation_id,
                reply,
                {CORRELATION_ID: address.correlation_id},
                partition=address.partition,
            )
        ]
