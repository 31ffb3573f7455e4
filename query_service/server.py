"""The gRPC QueryService: Search over text, image or both; health and reflection included."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, Literal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import Field

from mmrag.errors import PermanentError
from mmrag.pb import query_pb2, query_pb2_grpc
from mmrag.settings import BaseServiceSettings, SpaceSettings, VectorStoreSettings
from mmrag.telemetry import Probes
from query_service.ask import RetrievalUnavailableError
from query_service.eval_log import Client
from query_service.filters import FilterError, scope_of
from query_service.spaces import ServingSpace
from query_service.status_view import StatusView, answer_status

log = logging.getLogger(__name__)
SERVICE_NAME = query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name


class QueryServiceSettings(BaseServiceSettings, SpaceSettings, VectorStoreSettings):
    grpc_host: str = Field(default="127.0.0.1", description="address the gRPC server binds (0.0.0.0 for all)")
    grpc_port: int = Field(default=50051, description="gRPC port; taken = an error at start")
    reply_partition: int = Field(default=0, ge=0, description="the reply partition this replica owns")
    search_timeout_s: float = Field(default=2.0, description="deadline for the shards' replies (then partial)")
    default_top_k: int = Field(default=10, description="hits when a query asks for 0")
    max_top_k: int = Field(default=100, description="largest top_k a query may ask for")
    grpc_workers: int = Field(default=8, description="gRPC server threads (concurrent calls)")
    fusion: Literal["modality", "joint"] = Field(
        default="modality",
        description="modality: a text list and an image list, the one CLIP puts the query closer to first; joint: "
        "one list by the joint vector's weighted cosines (images crowd text answers with a badly calibrated CLIP)",
    )
    max_query_image_bytes: int = Field(
        default=16 << 20,
        ge=1,
        description="largest image a Search takes; gRPC takes 1 MiB more per request so a larger one is answered "
        "INVALID_ARGUMENT naming this limit (gRPC's own 4 MiB default refused before the service could say why)",
    )
    space_refresh_s: float = Field(
        default=1.0,
        ge=0,
        description="seconds between looks at the live alias: queries follow a swap to the space it names (encoded "
        "with that space's models); 0 = serve the configured space only (no Milvus, e.g. Faiss alone)",
    )
    keyword_search: bool = Field(
        default=True,
        description="also ask the shards' keyword (BM25) indexes: hybrid ranking, and the answer when the vector "
        "index fails (degraded=keyword)",
    )
    # caches (query_service/caches.py); 0 turns one off
    embedding_cache_size: int = Field(default=4096, ge=0, description="query texts/images whose vectors are kept")
    result_cache_size: int = Field(default=4096, ge=0, description="complete search answers kept")
    result_cache_ttl_s: float = Field(default=5.0, ge=0, description="a kept answer answers the same query this long")
    result_cache_stale_s: float = Field(
        default=300.0, ge=0, description="when retrieval times out, a kept answer this old is given instead"
    )
    # Ask answer cache (query_service/answer_cache.py): a close question in the same scope, no source changed since
    answer_cache_size: int = Field(default=1024, ge=0, description="answers kept (0 = no answer cache)")
    answer_cache_similarity: float = Field(
        default=0.97, gt=0, le=1, description="least cosine between two questions' query vectors to share an answer"
    )
    answer_cache_ttl_s: float = Field(
        default=900.0, gt=0, description="an answer is served this long at most (a source changing drops it at once)"
    )
    cache_redis_url: str = Field(
        default="", description="redis://host:port/db: the answer cache in Redis, shared by replicas; '' = in process"
    )
    # Ask: sources, generation through llm.requests.v1, the breaker and the degraded answer
    ask_timeout_s: float = Field(default=60.0, description="an Ask's whole budget when the client sets no deadline")
    ask_max_sources: int = Field(default=3, ge=1, description="numbered sources (one per object) given to the LLM")
    ask_chunks_per_source: int = Field(default=2, ge=1, description="best chunks of one object joined in a source")
    ask_label_bucket: bool = Field(
        default=False, description="label the LLM's sources bucket/key; False: the key alone (fewer prompt tokens)"
    )
    ask_source_words: int = Field(
        default=25,
        ge=0,
        description="a text source longer than this is focused on the question: its best-matching sentences "
        "within this many words (the first token costs every prompt token: bench.ask); 0 = whole chunks",
    )
    ask_max_tokens: int = Field(default=256, ge=1, description="the most answer tokens an Ask may ask for; its default")
    ask_max_question_chars: int = Field(
        default=2000, ge=1, description="a longer question is refused (INVALID_ARGUMENT): it would not fit the prompt"
    )
    # Calibrated by `python -m bench.ask_min_score` (33 documents, 49 answered vs 12 off-topic questions): answered
    # best scores 0.128-0.469, off-topic 0.051-0.167 (10 of 12 under 0.125). 0.12 keeps every answered question
    # (a false "not found" is worse than a generation the grounding check can still catch) and stops 8 of 12.
    ask_min_score: float = Field(default=0.12, description="best hit under it: 'not found', no LLM generation")
    llm_first_token_timeout_s: float = Field(default=10.0, description="slower counts as a failure: degrade")
    llm_stall_timeout_s: float = Field(default=5.0, description="longest gap between two answer chunks")
    llm_breaker_fail_max: int = Field(default=3, ge=1, description="consecutive LLM failures that open the breaker")
    llm_breaker_reset_s: float = Field(default=15.0, description="open this long, then requests probe (half-open)")
    llm_worker_max_age_s: float = Field(
        default=2.0,
        gt=0,
        description="an LLM worker whose last heartbeat (llm.heartbeats.v1) is older is absent: with none left, Asks "
        "degrade at once (no-llm-worker); workers beat every MMRAG_LLM_HEARTBEAT_INTERVAL_S",
    )


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    def __init__(
        self,
        settings: QueryServiceSettings,
        spaces: Callable[[], ServingSpace],
        status_view: StatusView | None = None,
    ) -> None:
        """``spaces``: the space answering now (query_service/spaces.py); each call takes it once, so one space
        encodes and answers the whole call."""
        self.settings = settings
        self.spaces = spaces
        self.status_view = status_view

    def Search(self, request: query_pb2.SearchQuery, context: Any) -> query_pb2.SearchResponse:  # noqa: N802
        top_k = request.top_k or self.settings.default_top_k
        if not 0 < top_k <= self.settings.max_top_k:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"top_k must be 1..{self.settings.max_top_k}")
        if len(request.image) > self.settings.max_query_image_bytes:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"image: {len(request.image)} bytes, over the limit of {self.settings.max_query_image_bytes} "
                "(MMRAG_MAX_QUERY_IMAGE_BYTES); send a smaller image (a 224 px model needs no more)",
            )
        try:
            scope = scope_of(request.filter, request.raw_chunks)
        except FilterError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        space = self.spaces()
        try:
            vector = space.encoder.encode(request.text, request.image)
        except (ValueError, PermanentError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"query: {exc}")
        remaining = context.time_remaining()
        timeout = (
            min(self.settings.search_timeout_s, remaining) if remaining is not None else self.settings.search_timeout_s
        )
        outcome = space.search.search(vector, top_k, timeout, request.text, scope)
        response = query_pb2.SearchResponse(
            partial=outcome.partial,
            missing_shards=outcome.missing_shards,
            space_id=space.spec.space_id,
            space_name=space.spec.space_name,
            from_cache=outcome.from_cache,
            degraded=outcome.degraded,
        )
        for sh in outcome.hits:
            h = sh.hit
            response.results.add(
                object_id=h.object_id,
                vector_id=h.vector_id,
                version=h.version,
                score=h.score,
                text=h.text,
                chunk_index=h.chunk_index,
                char_start=h.char_start,
                char_end=h.char_end,
                page=h.page,
                shard=sh.shard,
                has_text=h.has_text,
                has_image=h.has_image,
            )
        return response

    def Ask(self, request: query_pb2.AskRequest, context: Any) -> Iterator[query_pb2.AskResponse]:  # noqa: N802
        """Streams the sources, the answer deltas, then the final message (see query_service/ask.py)."""
        asker = self.spaces().asker
        if asker is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Ask needs the LLM path; this server was built without it")
            return
        top_k = request.top_k or self.settings.default_top_k
        if not request.question.strip() or not 0 < top_k <= self.settings.max_top_k:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"a question and top_k 1..{self.settings.max_top_k}")
        s = self.settings
        if len(request.question) > s.ask_max_question_chars:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"question: {len(request.question)} characters, over the limit of {s.ask_max_question_chars} "
                "(MMRAG_ASK_MAX_QUESTION_CHARS); ask a shorter question",
            )
        if not 0 <= request.max_tokens <= s.ask_max_tokens:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"max_tokens must be 1..{s.ask_max_tokens} (MMRAG_ASK_MAX_TOKENS), or 0 for that default",
            )
        try:
            scope = scope_of(request.filter)
        except FilterError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            client = Client.from_grpc(context.peer(), context.invocation_metadata())
            remaining = context.time_remaining()
            yield from asker.ask(request.question, top_k, request.max_tokens, remaining, client, scope)
        except RetrievalUnavailableError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except (ValueError, PermanentError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"question: {exc}")

    def GetObjectStatus(  # noqa: N802
        self, request: query_pb2.ObjectStatusRequest, context: Any
    ) -> query_pb2.ObjectStatusResponse:
        """Is it searchable yet: from the status view (query_service/status_view.py)."""
        return answer_status(self.status_view, request.object_id, context)


def serve(settings: QueryServiceSettings, servicer: QueryServicer, probes: Probes, stop: threading.Event) -> None:
    """Serves until ``stop``; gRPC health turns SERVING with readiness, reflection lets grpcurl discover it."""
    # No SO_REUSEPORT: by default gRPC shares a taken port silently, and a second server would take half the calls.
    options = [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", settings.max_query_image_bytes + (1 << 20)),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=settings.grpc_workers), options=options)
    query_pb2_grpc.add_QueryServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    except RuntimeError as exc:
        raise RuntimeError(
            f"[query service] gRPC port {settings.grpc_host}:{settings.grpc_port} is taken ({exc}) -> stop what "
            "listens there (another query service?) or set MMRAG_GRPC_PORT"
        ) from exc
    server.start()
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    probes.set_ready(True)
    log.info("QueryService on %s:%d", settings.grpc_host, port)
    stop.wait()
    probes.set_ready(False, "stopping")
    server.stop(grace=5).wait()
