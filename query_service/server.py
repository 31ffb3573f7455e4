"""The gRPC QueryService: Search over text, image or both; health and reflection included."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace

from mmrag.errors import PermanentError
from mmrag.grpc_tls import add_port
from mmrag.pb import query_pb2, query_pb2_grpc
from mmrag.telemetry import Probes
from mmrag.tracing import span_attributes
from query_service.ask import RetrievalUnavailableError
from query_service.callers import current_caller
from query_service.eval_log import Client
from query_service.filters import FilterError, scope_of
from query_service.settings import QueryServiceSettings
from query_service.spaces import ServingSpace
from query_service.status_view import StatusView, answer_status

log = logging.getLogger(__name__)
SERVICE_NAME = query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name
TRACER = trace.get_tracer("query_service")


def _rpc(method: str) -> dict[str, str]:
    return {"rpc.system": "grpc", "rpc.service": SERVICE_NAME, "rpc.method": method}


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
        """One trace per call: encoding, the shards' retrieval (their spans are children), fusion."""
        with TRACER.start_as_current_span("Search", kind=trace.SpanKind.SERVER, attributes=_rpc("Search")) as span:
            response = self._search(request, context)
            span.set_attributes(
                span_attributes(
                    hits=len(response.results),
                    partial=response.partial,
                    degraded=response.degraded,
                    from_cache=response.from_cache,
                )
            )
            return response

    def _search(self, request: query_pb2.SearchQuery, context: Any) -> query_pb2.SearchResponse:
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
            scope = scope_of(request.filter, request.raw_chunks, caller=current_caller())
        except FilterError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        space = self.spaces()
        try:
            with TRACER.start_as_current_span("encode query", attributes=span_attributes(image=bool(request.image))):
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
        """Streams the sources, the answer deltas, then the final message (see query_service/ask.py); one trace
        per call: encoding, retrieval, generation by an LLM worker, grounding."""
        with TRACER.start_as_current_span("Ask", kind=trace.SpanKind.SERVER, attributes=_rpc("Ask")):
            yield from self._ask(request, context)

    def _ask(self, request: query_pb2.AskRequest, context: Any) -> Iterator[query_pb2.AskResponse]:
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
            scope = scope_of(request.filter, caller=current_caller())
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
        caller = current_caller()
        readers = None if caller.unrestricted else caller.reader_tokens()
        return answer_status(self.status_view, request.object_id, context, readers)


def serve(
    settings: QueryServiceSettings,
    servicer: QueryServicer,
    probes: Probes,
    stop: threading.Event,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> None:
    """Serves until ``stop``; gRPC health turns SERVING with readiness, reflection lets grpcurl discover it;
    ``interceptors``: the call guard (authentication, roles, audit: query_service/call_guard.py)."""
    # No SO_REUSEPORT: by default gRPC shares a taken port silently, and a second server would take half the calls.
    options = [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", settings.max_query_image_bytes + (1 << 20)),
    ]
    workers = futures.ThreadPoolExecutor(max_workers=settings.grpc_workers)
    server = grpc.server(workers, interceptors=list(interceptors), options=options)
    query_pb2_grpc.add_QueryServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = add_port(server, f"{settings.grpc_host}:{settings.grpc_port}", settings)  # TLS when configured
    except RuntimeError as exc:
        raise RuntimeError(
            f"[query service] gRPC port {settings.grpc_host}:{settings.grpc_port} is taken ({exc}) -> stop what "
            "listens there (another query service?) or set MMRAG_GRPC_PORT"
        ) from exc
    server.start()
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    probes.set_ready(True)
    log.info("QueryService on %s:%d (%s)", settings.grpc_host, port, "TLS" if settings.grpc_tls_cert else "plaintext")
    stop.wait()
    probes.set_ready(False, "stopping")
    server.stop(grace=5).wait()
