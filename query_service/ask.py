"""Ask: retrieve, number the sources, generate through the LLM workers, stream sources -> deltas -> final.

When the breaker is open, no LLM worker is there, or the LLM fails or is too slow, the answer degrades at once to
an extractive one from the same sources (is_degraded, with the reason); the breaker counts every outcome."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

from mmrag.metrics import LATENCY_BUCKETS
from mmrag.pb.events_pb2 import GenerateRequest
from mmrag.pb.query_pb2 import AskDelta, AskFinal, AskResponse, AskSources, AskTimings
from query_service.extractive import extractive_answer, supporting_sources
from query_service.generation import GenerationClient
from query_service.llm_breaker import LlmBreaker, LlmUnavailableError, WorkerPresence
from query_service.query_encoder import QueryEncoder
from query_service.search import SearchOutcome, ShardedSearch
from query_service.sources import INSTRUCTION, Source, cited_numbers, select_sources

log = logging.getLogger(__name__)
ASK_SECONDS = Histogram("mmrag_ask_seconds", "Ask end to end", buckets=LATENCY_BUCKETS)
ASK_FIRST_TOKEN = Histogram("mmrag_ask_first_token_seconds", "Ask start to first answer token", buckets=LATENCY_BUCKETS)
DEGRADED = Counter("mmrag_ask_degraded_total", "Degraded (extractive) answers by reason", ["reason"])
NOT_FOUND = "Nothing in the indexed documents matches the question."


class RetrievalUnavailableError(Exception):
    """No shard answered: there is nothing to answer from (an honest error, not an empty answer)."""


@dataclass(frozen=True)
class AskLimits:
    search_timeout_s: float
    ask_timeout_s: float
    max_sources: int
    chunks_per_source: int
    max_tokens: int


@dataclass
class Answer:
    """What an Ask has produced so far."""

    start: float
    sources: list[Source] = field(default_factory=list)
    text: str = ""
    retrieved_at: float = 0.0
    first_token_at: float = 0.0
    sources_given: int = 0  # how many sources fit the model's context (0 = all, for extractive answers)
    final: AskFinal = field(default_factory=AskFinal)

    def timings(self) -> AskTimings:
        ms = 1000.0
        first = (self.first_token_at - self.start) * ms if self.first_token_at else 0.0
        return AskTimings(
            retrieve_ms=(self.retrieved_at - self.start) * ms,
            first_token_ms=first,
            total_ms=(time.monotonic() - self.start) * ms,
        )


class Asker:
    def __init__(
        self,
        limits: AskLimits,
        encoder: QueryEncoder,
        search: ShardedSearch,
        generation: GenerationClient,
        breaker: LlmBreaker,
        presence: WorkerPresence | None,
    ) -> None:
        self.limits = limits
        self.encoder = encoder
        self.search = search
        self.generation = generation
        self.breaker = breaker
        self.presence = presence

    def ask(self, question: str, top_k: int, max_tokens: int, time_left_s: float | None) -> Iterator[AskResponse]:
        """The Ask event stream. RetrievalUnavailableError when no shard answered; ValueError for a bad question."""
        answer = Answer(time.monotonic())
        budget = min(time_left_s, self.limits.ask_timeout_s) if time_left_s is not None else self.limits.ask_timeout_s
        deadline = answer.start + budget
        outcome = self._retrieve(question, top_k, deadline)
        answer.retrieved_at = time.monotonic()
        answer.sources = select_sources(outcome.hits, self.limits.max_sources, self.limits.chunks_per_source)
        yield AskResponse(
            sources=AskSources(
                sources=[s.ask_source() for s in answer.sources],
                partial=outcome.partial,
                missing_shards=outcome.missing_shards,
                space_id=self.search.space_id,
            )
        )
        if not answer.sources:
            answer.text = NOT_FOUND
            yield AskResponse(delta=AskDelta(text=NOT_FOUND))
        else:
            yield from self._answer(question, max_tokens, deadline, answer)
        yield AskResponse(final=self._final(answer))
        ASK_SECONDS.observe(time.monotonic() - answer.start)

    def _retrieve(self, question: str, top_k: int, deadline: float) -> SearchOutcome:
        vector = self.encoder.encode(question, b"")
        timeout = max(0.05, min(self.limits.search_timeout_s, deadline - time.monotonic()))
        outcome = self.search.search(vector, top_k, timeout, question)
        if len(outcome.missing_shards) == self.search.shards:
            errors = "; ".join(outcome.errors) or "no shard answered in time"
            raise RetrievalUnavailableError(f"retrieval failed on every shard ({errors}); check the retrieval workers")
        return outcome

    def _answer(self, question: str, max_tokens: int, deadline: float, answer: Answer) -> Iterator[AskResponse]:
        try:
            self._admit()
            yield from self._generate(question, max_tokens, deadline, answer)
        except LlmUnavailableError as failure:
            if failure.reason != "breaker-open":
                self.breaker.record(failure)
            log.info("degraded answer: %s", failure)
            yield from self._degrade(question, answer, failure.reason)
        else:
            self.breaker.record(None)

    def _admit(self) -> None:
        if not self.breaker.admits():
            raise LlmUnavailableError("breaker-open")
        if self.presence is not None and self.presence.workers == 0:
            raise LlmUnavailableError("no-llm-worker")

    def _generate(self, question: str, max_tokens: int, deadline: float, answer: Answer) -> Iterator[AskResponse]:
        request = GenerateRequest(
            correlation_id=uuid.uuid4().hex,
            question=question,
            max_tokens=min(max_tokens or self.limits.max_tokens, self.limits.max_tokens),
            instruction=INSTRUCTION,
            sources=[s.prompt_source() for s in answer.sources],
        )
        for chunk in self.generation.stream(request, deadline):
            if chunk.text:
                if not answer.first_token_at:
                    answer.first_token_at = time.monotonic()
                    ASK_FIRST_TOKEN.observe(answer.first_token_at - answer.start)
                answer.text += chunk.text
                yield AskResponse(delta=AskDelta(text=chunk.text))
            if chunk.final:
                f = answer.final
                f.model, f.finish_reason = chunk.model, chunk.finish_reason
                f.prompt_tokens, f.completion_tokens = chunk.prompt_tokens, chunk.completion_tokens
                answer.sources_given = chunk.sources_given
        if not answer.text.strip():
            raise LlmUnavailableError("llm-empty", "the model returned no text")

    def _degrade(self, question: str, answer: Answer, reason: str) -> Iterator[AskResponse]:
        DEGRADED.labels(reason).inc()
        summary = extractive_answer(question, answer.sources)
        text = f"\n\n(The answer broke off; from the sources:) {summary}" if answer.text else summary
        answer.text += text
        answer.final.is_degraded, answer.final.degraded_reason = True, reason
        yield AskResponse(delta=AskDelta(text=text))

    def _final(self, answer: Answer) -> AskFinal:
        final = answer.final
        final.answer = answer.text
        by_number = {s.number: s for s in answer.sources}
        given = answer.sources[: answer.sources_given or len(answer.sources)]
        numbers = cited_numbers(answer.text, len(given))
        if not numbers and not final.is_degraded:
            numbers = supporting_sources(answer.text, given)
            final.citations_inferred = bool(numbers)
        final.citations.extend(by_number[n].ask_source() for n in numbers)
        final.timings.CopyFrom(answer.timings())
        return final
