"""Generation over Kafka: a GenerateRequest to llm.requests.v1, its GenerateChunks back on this replica's
partition of llm.replies.v1, in seq order, until the final chunk."""

from __future__ import annotations

import time
from collections.abc import Iterator

from mmrag.messages import now_ms
from mmrag.pb.events_pb2 import GenerateChunk, GenerateRequest
from query_service.llm_breaker import LlmUnavailableError
from query_service.reply_client import Route


class GenerationClient:
    def __init__(self, route: Route, first_token_timeout_s: float, stall_timeout_s: float) -> None:
        self.route = route
        self.first_token_timeout_s = first_token_timeout_s
        self.stall_timeout_s = stall_timeout_s

    def stream(self, request: GenerateRequest, deadline: float) -> Iterator[GenerateChunk]:
        """Chunks in seq order, the final one last. LlmUnavailableError: ``llm-timeout`` (no first chunk within the
        first-token timeout), ``llm-interrupted`` (the stream stalled or the deadline passed), ``llm-error``."""
        cid = request.correlation_id
        request.deadline_ms = now_ms() + int(max(0.0, deadline - time.monotonic()) * 1000)
        with self.route.send(cid, request, request.deadline_ms) as pending:
            wait_until = min(deadline, time.monotonic() + self.first_token_timeout_s)
            expected = 0
            while True:
                chunk = pending.next(wait_until)
                if chunk is None:
                    reason = "llm-timeout" if expected == 0 else "llm-interrupted"
                    raise LlmUnavailableError(reason, f"no reply chunk {expected} in time")
                assert isinstance(chunk, GenerateChunk)
                if chunk.error:
                    raise LlmUnavailableError("llm-error", chunk.error)
                if not chunk.final and chunk.seq < expected:
                    continue  # a duplicate (a retried produce): already passed on
                yield chunk
                if chunk.final:
                    return
                expected = chunk.seq + 1
                wait_until = min(deadline, time.monotonic() + self.stall_timeout_s)
