"""Ask: retrieve, number the sources, generate through the LLM workers, stream sources -> deltas -> final.

When the breaker is open, no LLM worker is there, or the LLM fails or is too slow, the answer degrades at once to
an extractive one from the same sources (is_degraded, with the reason); the breaker counts every outcome."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue
from prometheus_client import Counter, Histogram

from mmrag import pii
from mmrag.messages import now_ms
from mmrag.metrics import LATENCY_BUCKETS
from mmrag.pb.events_pb2 import GenerateRequest
from mmrag.pb.query_pb2 import AskDelta, AskFinal, AskResponse, AskSources, AskTimings
from mmrag.tracing import span_attributes, trace_exemplar
from query_service.answer_cache import AnswerCache, cacheable
from query_service.answer_entry import CachedAnswer
from query_service.eval_log import Client, EvalLog, eval_record
from query_service.filters import Scope
from query_service.generation import GenerationClient
from query_service.grounding import NOT_FOUND, UNGROUNDED, degenerate, nothing_relevant
from query_service.llm_breaker import LlmBreaker, LlmUnavailableError, WorkerPresence
from query_service.query_encoder import QueryEncoder
from query_service.search import ShardedSearch
from query_service.sources import INSTRUCTION, Source, select_sources
from query_service.support import SupportChecker
from query_service.types import SearchOutcome, ShardHit

log = logging.getLogger(__name__)
TRACER = trace.get_tracer("query_service")
CITED = re.compile(r"\[(\d+)\]")  # the citations an extractive answer carries, one number each
ASK_SECONDS = Histogram("mmrag_ask_seconds", "Ask end to end", buckets=LATENCY_BUCKETS)
ASK_FIRST_TOKEN = Histogram("mmrag_ask_first_token_seconds", "Ask start to first answer token", buckets=LATENCY_BUCKETS)
LOOP_WINDOW_CHARS = 400  # the answer's tail checked for a loop after each chunk (8 runs of a 4-word phrase fit)
DEGRADED = Counter("mmrag_ask_degraded_total", "Degraded (extractive) answers by reason", ["reason"])
NOT_FOUND_TOTAL = Counter(
    "mmrag_ask_not_found_total",
    "Asks answered 'not found' (best score under the minimum, or an ungrounded answer the sources share no word with)",
)


class RetrievalUnavailableError(Exception):
    """No shard answered: there is nothing to answer from (an honest error, not an empty answer)."""


@dataclass(frozen=True)
class AskLimits:
    search_timeout_s: float
    ask_timeout_s: float
    max_sources: int
    chunks_per_source: int
    max_tokens: int
    min_score: float = float("-inf")  # MMRAG_ASK_MIN_SCORE: a best hit under it -> "not found", no generation
    source_words: int = 0  # MMRAG_ASK_SOURCE_WORDS: a longer text source is focused on the question (0: whole)
    label_bucket: bool = True  # MMRAG_ASK_LABEL_BUCKET: sources labelled bucket/key (else the key alone)
    support_min: float = 0.6  # MMRAG_ASK_SUPPORT_MIN: an answer sentence this close to a source sentence is said there
    answer_min: float = 0.65  # MMRAG_ASK_ANSWER_MIN: a source sentence this close to the question answers it


@dataclass
class Answer:
    """What an Ask has produced so far."""

    start: float
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    asked_at_ms: int = field(default_factory=now_ms)
    sources: list[Source] = field(default_factory=list)
    text: str = ""
    retrieved_at: float = 0.0
    first_token_at: float = 0.0
    sources_given: int = 0  # how many sources fit the model's context (0 = all, for extractive answers)
    final: AskFinal = field(default_factory=AskFinal)
    citations: list[int] = field(default_factory=list)  # a supported answer's sources, as the support check found
    redactor: pii.StreamRedactor = field(default_factory=pii.StreamRedactor)  # its counts: what the answer redacted
    stream: pii.StreamRedactor = field(default_factory=pii.StreamRedactor)  # the provisional text's

    def provisional(self, text: str, last: bool = False) -> Iterator[AskResponse]:
        """Generated ``text`` as a provisional delta (not checked against the sources yet; the answer delta that
        follows replaces it), PII redacted (a short tail waits for the next piece unless last)."""
        safe = self.stream.feed(text) + (self.stream.flush() if last else "")
        if safe:
            yield AskResponse(delta=AskDelta(text=safe, provisional=True))

    def answered(self, text: str) -> Iterator[AskResponse]:
        """The answer as the client shows it (supported, extractive or "not found"): one delta, PII redacted."""
        self.text = text
        redacted = pii.redact(text)
        self.redactor.counts.update(redacted.counts)
        yield AskResponse(delta=AskDelta(text=redacted.text))

    def generation_attributes(self) -> dict[str, AttributeValue]:
        """What the trace shows of a generation: its timing and size, never its text."""
        f = self.final
        first_ms = round((self.first_token_at - self.start) * 1000, 1) if self.first_token_at else None
        return span_attributes(
            model=f.model,
            finish_reason=f.finish_reason,
            prompt_tokens=f.prompt_tokens,
            completion_tokens=f.completion_tokens,
            first_token_ms=first_ms,
        )

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
        eval_log: EvalLog | None = None,
        answers: AnswerCache | None = None,
        support: SupportChecker | None = None,
    ) -> None:
        self.limits = limits
        self.encoder = encoder
        self.search = search
        self.generation = generation
        self.breaker = breaker
        self.presence = presence
        self.eval_log = eval_log
        self.answers = answers  # the answer cache (query_service/answer_cache.py); None = every Ask generates
        self.support = support or SupportChecker(encoder.minilm_sentences, limits.support_min, limits.answer_min)

    def ask(
        self,
        question: str,
        top_k: int,
        max_tokens: int,
        time_left_s: float | None,
        client: Client | None = None,
        scope: Scope | None = None,
    ) -> Iterator[AskResponse]:
        """The Ask event stream, then its record on the eval log. RetrievalUnavailableError when no shard answered;
        ValueError for a bad question. ``scope``: the filter its sources must pass (chunks are always retrieved).
        With an answer cache: a close enough question answered before from sources that have not changed since is
        answered from it (``from_cache``); a new cacheable answer is stored before its final message."""
        answer = Answer(time.monotonic())
        budget = min(time_left_s, self.limits.ask_timeout_s) if time_left_s is not None else self.limits.ask_timeout_s
        scope = replace(scope or Scope(), raw_chunks=True)
        with TRACER.start_as_current_span("encode query"):
            vector = self.encoder.encode(question, b"")
        key = AnswerCache.scope_key(self.search.space_id, scope, top_k, max_tokens, self.limits)
        cached = self.answers.lookup(vector, key) if self.answers is not None else None
        if cached is not None:
            yield from self._replay(question, cached, answer, client or Client())
            return
        outcome = self._retrieve(vector, question, top_k, answer.start + budget, scope)
        answer.retrieved_at = time.monotonic()
        limits = self.limits
        answer.sources = select_sources(
            outcome.hits, limits.max_sources, limits.chunks_per_source, question, limits.source_words
        )
        sources = AskSources(
            sources=[s.ask_source() for s in answer.sources],
            partial=outcome.partial,
            missing_shards=outcome.missing_shards,
            space_id=self.search.space_id,
            space_name=self.search.space_name,
            from_cache=outcome.from_cache,
            degraded=outcome.degraded,
        )
        yield AskResponse(sources=sources)
        generated = yield from self._respond(question, max_tokens, answer.start + budget, answer, outcome.hits)
        final = self._final(answer)
        if generated and self.answers is not None and cacheable(sources, final):
            self.answers.store_answer(vector, key, sources, final, answer.asked_at_ms)
        yield AskResponse(final=final)
        self._finish(question, outcome.hits, answer, final, client or Client())

    def _respond(
        self, question: str, max_tokens: int, deadline: float, answer: Answer, hits: Sequence[ShardHit]
    ) -> Generator[AskResponse, None, bool]:
        """The answer's deltas: "not found" when nothing relevant was retrieved, else generated (or degraded);
        True when generation was tried."""
        if not answer.sources or nothing_relevant(hits, self.limits.min_score):
            NOT_FOUND_TOTAL.inc()
            yield from answer.answered(NOT_FOUND)
            return False
        yield from self._answer(question, max_tokens, deadline, answer)
        return True

    def _replay(self, question: str, cached: CachedAnswer, answer: Answer, client: Client) -> Iterator[AskResponse]:
        """A cached answer as a stream: its sources, the whole answer as one delta, its final with this call's
        timings; both flagged ``from_cache``."""
        sources, final = AskSources.FromString(cached.sources), AskFinal.FromString(cached.final)
        sources.from_cache = final.from_cache = True
        answer.retrieved_at = answer.first_token_at = time.monotonic()
        yield AskResponse(sources=sources)
        yield AskResponse(delta=AskDelta(text=final.answer))
        final.timings.CopyFrom(answer.timings())
        yield AskResponse(final=final)
        self._finish(question, [], answer, final, client)

    def _finish(self, question: str, hits: Sequence[ShardHit], answer: Answer, final: AskFinal, client: Client) -> None:
        pii.count(answer.redactor.counts)
        self._record(question, hits, answer, final, client)
        ASK_SECONDS.observe(time.monotonic() - answer.start, trace_exemplar())

    def _record(self, question: str, hits: Sequence[ShardHit], answer: Answer, final: AskFinal, client: Client) -> None:
        if self.eval_log is not None:
            space = self.search.space_id
            asked_at, counts = answer.asked_at_ms, answer.redactor.counts
            record = eval_record(answer.request_id, question, hits, final, space, client, asked_at, counts)
            self.eval_log.write(record)

    def _retrieve(self, vector: np.ndarray, question: str, top_k: int, deadline: float, scope: Scope) -> SearchOutcome:
        timeout = max(0.05, min(self.limits.search_timeout_s, deadline - time.monotonic()))
        outcome = self.search.search(vector, top_k, timeout, question, scope)
        if len(outcome.missing_shards) == self.search.shards:
            errors = "; ".join(outcome.errors) or "no shard answered in time"
            raise RetrievalUnavailableError(f"retrieval failed on every shard ({errors}); check the retrieval workers")
        return outcome

    def _answer(self, question: str, max_tokens: int, deadline: float, answer: Answer) -> Iterator[AskResponse]:
        try:
            self._admit()
            with TRACER.start_as_current_span("llm", attributes=span_attributes(sources=len(answer.sources))) as span:
                yield from self._generate(question, max_tokens, deadline, answer)
                span.set_attributes(answer.generation_attributes())
        except LlmUnavailableError as failure:
            if failure.reason != "breaker-open":
                self.breaker.record(failure)
            log.info("degraded answer: %s", failure)
            yield from self._degrade(question, answer, failure.reason)
        else:
            self.breaker.record(None)
            yield from self._check_support(question, answer)

    def _admit(self) -> None:
        if not self.breaker.admits():
            raise LlmUnavailableError("breaker-open")
        if self.presence is not None and self.presence.workers == 0:
            raise LlmUnavailableError("no-llm-worker")

    def _generate(self, question: str, max_tokens: int, deadline: float, answer: Answer) -> Iterator[AskResponse]:
        request = GenerateRequest(
            correlation_id=answer.request_id,
            question=question,
            max_tokens=min(max_tokens or self.limits.max_tokens, self.limits.max_tokens),
            instruction=INSTRUCTION,
            sources=[s.prompt_source(self.limits.label_bucket) for s in answer.sources],
        )
        for chunk in self.generation.stream(request, deadline):
            if chunk.text:
                if not answer.first_token_at:
                    answer.first_token_at = time.monotonic()
                    ASK_FIRST_TOKEN.observe(answer.first_token_at - answer.start, trace_exemplar())
                answer.text += chunk.text
                yield from answer.provisional(chunk.text)
                if degenerate(answer.text[-LOOP_WINDOW_CHARS:]):  # a loop that would run to the token limit
                    answer.final.finish_reason = "repetition"  # the support check replaces it
                    break
            if chunk.final:
                f = answer.final
                f.model, f.finish_reason = chunk.model, chunk.finish_reason
                f.prompt_tokens, f.completion_tokens = chunk.prompt_tokens, chunk.completion_tokens
                answer.sources_given = chunk.sources_given
        yield from answer.provisional("", last=True)
        if not answer.text.strip():
            raise LlmUnavailableError("llm-empty", "the model returned no text")

    def _degrade(self, question: str, answer: Answer, reason: str) -> Iterator[AskResponse]:
        DEGRADED.labels(reason).inc()
        trace.get_current_span().set_attribute("mmrag.degraded_reason", reason)
        yield from self._extractive(question, answer, reason)

    def _extractive(self, question: str, answer: Answer, reason: str) -> Iterator[AskResponse]:
        """The source sentences that answer the question, each cited (degraded, ``reason``), or "not found"."""
        summary = self.support.extract(question, answer.sources)
        if not summary:
            NOT_FOUND_TOTAL.inc()
        answer.sources_given = 0
        answer.final.is_degraded, answer.final.degraded_reason = True, reason
        yield from answer.answered(summary or NOT_FOUND)

    def _check_support(self, question: str, answer: Answer) -> Iterator[AskResponse]:
        """The generated answer is the answer only when the sources support each sentence (support.py); it is then
        given with the system's citations, else replaced by the extractive answer (degraded ``ungrounded``)."""
        given = answer.sources[: answer.sources_given or len(answer.sources)]
        with TRACER.start_as_current_span("grounding", attributes=span_attributes(sources=len(given))) as span:
            verdict = self.support.check(question, answer.text, given)
            span.set_attribute("mmrag.supported", verdict.supported)
        if verdict.supported:
            answer.citations = verdict.numbers
            yield from answer.answered(verdict.cited())
            return
        DEGRADED.labels(UNGROUNDED).inc()
        log.info("unsupported answer (%s): %r; the extractive answer instead", verdict.problem, answer.text[:200])
        yield from self._extractive(question, answer, UNGROUNDED)

    def _final(self, answer: Answer) -> AskFinal:
        final = answer.final
        final.answer = pii.redact(answer.text).text
        by_number = {s.number: s for s in answer.sources}
        numbers = answer.citations or list(dict.fromkeys(int(n) for n in CITED.findall(answer.text)))
        final.citations_inferred = bool(answer.citations)  # attributed by the support check, not the model's markers
        final.citations.extend(by_number[n].ask_source() for n in numbers if n in by_number)
        final.timings.CopyFrom(answer.timings())
        return final
