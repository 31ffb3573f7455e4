"""The LLM worker's loop: takes requests as the model has room, generates beside the poll loop (a thread per
generation slot), streams GenerateChunks to each requester's reply partition.

Requests are interactive: a request's offset is committed when it is taken, so a crashed worker's requests are not
generated twice; their requesters' deadlines turn them into degraded answers (and a redelivered request would be
past its deadline anyway). Requests fetched while every slot is busy wait in the worker uncommitted (a rebalance
hands them to the partition's next owner) and are taken oldest first across partitions when a slot frees, expired
ones dropped unworked on the way; past LOOKAHEAD waiting, the assignment is paused and the loop keeps polling.

The loop also sends the worker's heartbeat (mmrag/heartbeats.py): ready while it holds request partitions (or is
handing them over in a rebalance), so a requester knows within seconds that no worker is there, a killed one too,
and a stopping worker says it is gone before it finishes its running generations."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, TopicPartition
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

from consumers.llm_worker.generator import Delta, GenerationError, GenerationParams, Generator
from consumers.llm_worker.prompt import build_prompt
from consumers.llm_worker.settings import LlmWorkerSettings
from mmrag.dlq import Origin, dead_letter
from mmrag.errors import PermanentError
from mmrag.heartbeats import HeartbeatSender
from mmrag.kafka_clients import decode_headers, make_consumer, make_producer
from mmrag.messages import Output, now_ms, proto_decoder
from mmrag.metrics import LATENCY_BUCKETS
from mmrag.pb.events_pb2 import GenerateChunk, GenerateRequest
from mmrag.producing import Deliveries, flush_or_raise, produce_outputs
from mmrag.request_reply import CORRELATION_ID, FAST_CONSUMER, FAST_PRODUCER, ReplyAddress, reply_address
from mmrag.telemetry import Probes
from mmrag.tracing import extract_context, inject_context, setup_tracing, span_attributes, trace_exemplar

log = logging.getLogger(__name__)
STAGE = "llm_worker"
EXPIRED = Counter("mmrag_llm_requests_expired_total", "Generate requests dropped unworked: their deadline had passed")
GENERATIONS = Counter("mmrag_llm_generations_total", "Generations by finish reason", ["finish_reason"])
FIRST_TOKEN = Histogram("mmrag_llm_first_token_seconds", "Request taken to first token", buckets=LATENCY_BUCKETS)
GENERATION_SECONDS = Histogram("mmrag_llm_generation_seconds", "Request taken to final chunk", buckets=LATENCY_BUCKETS)
TOKENS = Counter("mmrag_llm_tokens_total", "Tokens by kind (prompt, completion)", ["kind"])
BUSY = Gauge("mmrag_llm_busy_slots", "Generations running now")
WAITING = Gauge("mmrag_llm_waiting_requests", "Requests fetched and waiting for a free slot (not committed yet)")


# Requests held fetched but not taken, at most; beyond it the assignment is paused (they stay in Kafka).
LOOKAHEAD = 256


class Waiting:
    """Fetched, untaken requests per partition in offset order; ``pop_oldest`` takes the head with the oldest
    timestamp, so requests are taken in arrival order across partitions, each partition's order kept (Kafka
    timestamps are in ms: requests of the same ms on different partitions go by partition number)."""

    def __init__(self) -> None:
        self._queues: dict[tuple[str, int], deque[Any]] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def add(self, msg: Any) -> None:
        self._queues.setdefault((msg.topic(), msg.partition()), deque()).append(msg)

    def pop_oldest(self) -> Any | None:
        queues = [q for q in self._queues.values() if q]
        if not queues:
            return None
        return min(queues, key=lambda q: (q[0].timestamp()[1], q[0].partition())).popleft()

    def drop(self, partitions: list[Any]) -> None:
        """Forgets the requests of revoked partitions: uncommitted, their next owner reads them."""
        for tp in partitions:
            self._queues.pop((tp.topic, tp.partition), None)


@dataclass(frozen=True)
class Job:
    request: GenerateRequest
    address: ReplyAddress
    headers: dict[str, str]
    produced_ms: int = 0  # the request's Kafka timestamp: its queue wait ends when a slot takes it


class LlmWorker:
    def __init__(self, settings: LlmWorkerSettings, generator: Generator, probes: Probes) -> None:
        self.settings = settings
        self.generator = generator
        self.probes = probes
        self._decode = proto_decoder(GenerateRequest, STAGE)
        self._tracer = setup_tracing(STAGE)
        self._running: list[Future[None]] = []
        self._stop = threading.Event()
        self._consumer: Any = None
        self._producer: Any = None
        self._paused = False
        self._waiting = Waiting()
        self._heartbeat: HeartbeatSender | None = None
        self._handing_over = False  # partitions revoked in a rebalance, the new assignment not there yet

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        self.generator.warm_up()
        s = self.settings
        self._consumer = make_consumer(s.bootstrap_servers, s.group_id(s.group), **FAST_CONSUMER)
        self._producer = make_producer(s.bootstrap_servers, None, **FAST_PRODUCER)
        self._heartbeat = HeartbeatSender(
            self._producer, s.topics.llm_heartbeats, s.instance_id, self.generator.model, s.llm_heartbeat_interval_s
        )
        pool = ThreadPoolExecutor(self.generator.concurrency, thread_name_prefix="generate")
        self._consumer.subscribe(
            [s.topics.llm_requests], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )
        self.probes.set_ready(True)
        log.info("llm worker ready: model %s, %d slot(s)", self.generator.model, self.generator.concurrency)
        try:
            while not stop.is_set():
                self.step(pool)
        finally:
            self.probes.set_ready(False, "stopping")
            self._heartbeat.gone()  # requesters stop sending before the running generations are over
            pool.shutdown(wait=True)  # generations see ``stop`` and finish their stream early
            self._producer.flush(10)
            self._consumer.close()

    def step(self, pool: ThreadPoolExecutor) -> None:
        """One turn of the loop: fetch what came (waiting requests stay uncommitted), then take the oldest waiting
        requests while there are free slots."""
        self._running = [f for f in self._running if not f.done()]
        room = self.generator.concurrency - len(self._running)
        self._fetch(0.0 if room > 0 and len(self._waiting) else 0.05)
        while room > 0 and (msg := self._waiting.pop_oldest()) is not None:
            job = self._take(msg)  # None: expired (dropped unworked) or bad (dead-lettered)
            self._consumer.commit(
                offsets=[TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1)], asynchronous=True
            )
            if job is not None:
                self._running.append(pool.submit(self._generate, job))
                room -= 1
        WAITING.set(len(self._waiting))
        self._beat()
        self._producer.poll(0)

    def _beat(self) -> None:
        """The heartbeat, sent when due or changed: ready while a request sent now would be taken."""
        assert self._heartbeat is not None
        held = tuple(sorted(tp.partition for tp in self._consumer.assignment()))
        self._heartbeat.beat(bool(held) or self._handing_over, held)

    def _fetch(self, timeout_s: float) -> None:
        """Adds what the consumer has to the waiting requests: the first within ``timeout_s``, then what is already
        fetched. While LOOKAHEAD requests wait, the assignment is paused (again each turn: a rebalance may add
        partitions) and the loop keeps polling, so the group never sees a stalled member."""
        full = len(self._waiting) >= LOOKAHEAD
        assignment = self._consumer.assignment()
        if full:
            self._consumer.pause(assignment)
        elif self._paused:
            self._consumer.resume(assignment)
        self._paused = full
        msg = self._consumer.poll(timeout_s)
        if msg is None:
            return
        rest = self._consumer.consume(num_messages=max(1, LOOKAHEAD - len(self._waiting)), timeout=0)
        for m in [msg, *rest]:
            if not m.error():
                self._waiting.add(m)
            elif m.error().code() != KafkaError._PARTITION_EOF:
                log.warning("llm worker consumer: %s", m.error())

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        self._handing_over = False

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        self._waiting.drop(partitions)
        self._handing_over = bool(partitions)  # a rebalance: the group hands the partitions out again shortly

    def _lost(self, consumer: Any, partitions: list[Any]) -> None:
        self._waiting.drop(partitions)
        self._handing_over = False  # out of the group (session lost): not ready until it is assigned again

    def _take(self, msg: Any) -> Job | None:
        """The job of a request, or None when it is expired (counted) or bad (dead-lettered, durably)."""
        headers = decode_headers(msg.headers())
        address = reply_address(headers)
        try:
            request = self._decode(msg.value(), headers)
            if address is None or request is None:
                raise PermanentError(
                    STAGE,
                    f"request {msg.key()!r}",
                    "no reply address headers or empty body",
                    "send correlation_id, reply_topic, reply_partition and deadline_ms headers with a GenerateRequest",
                )
        except PermanentError as exc:
            origin = Origin(msg.topic(), msg.partition(), msg.offset())
            key = msg.key().decode(errors="replace") if msg.key() else None
            deliveries = Deliveries()
            dlq = dead_letter(
                self.settings.topics.dlq, key, msg.value(), headers, stage=STAGE, error=exc, origin=origin
            )
            produce_outputs(self._producer, [dlq], deliveries)
            flush_or_raise(self._producer, deliveries)
            return None
        if address.expired:
            EXPIRED.inc()
            log.info("request %s expired before it was taken: dropped", address.correlation_id)
            return None
        return Job(request, address, headers, msg.timestamp()[1])

    def _generate(self, job: Job) -> None:
        """Streams one answer; every way it ends sends a final chunk (the requester may still be listening)."""
        BUSY.inc()
        start = time.monotonic()
        with self._tracer.start_as_current_span(
            "generate",
            context=extract_context(job.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes=span_attributes(
                queue_wait_ms=max(0, now_ms() - job.produced_ms) if job.produced_ms > 0 else None,
                sources=len(job.request.sources),
            ),
        ):
            try:
                self._stream(job, start)
            except (GenerationError, ValueError) as exc:
                log.warning("generation %s failed: %s", job.address.correlation_id, exc)
                self._send(job, GenerateChunk(final=True, error=str(exc), finish_reason="error"))
                GENERATIONS.labels("error").inc()
            except Exception as exc:  # a bug must not kill the slot silently: the requester hears of it
                log.exception("generation %s crashed", job.address.correlation_id)
                self._send(job, GenerateChunk(final=True, error=f"{type(exc).__name__}: {exc}", finish_reason="error"))
                GENERATIONS.labels("error").inc()
            finally:
                BUSY.dec()
                GENERATION_SECONDS.observe(time.monotonic() - start, trace_exemplar())

    def _stream(self, job: Job, start: float) -> None:
        req, s, gen = job.request, self.settings, self.generator
        max_tokens = min(req.max_tokens or s.llm_max_tokens, s.llm_max_tokens)
        prompt = build_prompt(req, max_tokens, gen.context_tokens, gen.count_tokens)
        params = GenerationParams(max_tokens, req.temperature, req.top_p)
        cancel = threading.Event()
        seq, last = 0, Delta("")
        span = trace.get_current_span()
        for delta in gen.stream(prompt.messages, params, cancel):
            if delta.text:
                if seq == 0:
                    FIRST_TOKEN.observe(time.monotonic() - start, trace_exemplar())
                    span.add_event("first token", span_attributes(first_token_ms=_ms_since(start)))
                self._send(job, GenerateChunk(seq=seq, text=delta.text))
                seq += 1
            last = delta if delta.finish_reason else last
            if self._stop.is_set() or job.address.expired:
                cancel.set()
        finish = "deadline" if job.address.expired and last.finish_reason == "cancelled" else last.finish_reason
        final = GenerateChunk(
            seq=seq,
            final=True,
            finish_reason=finish,
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            model=gen.model,
            sources_given=prompt.sources_given,
        )
        self._send(job, final)
        span.set_attributes(
            span_attributes(
                model=gen.model,
                finish_reason=finish,
                prompt_tokens=last.prompt_tokens,
                completion_tokens=last.completion_tokens,
                generation_ms=_ms_since(start),
            )
        )
        GENERATIONS.labels(finish).inc()
        TOKENS.labels("prompt").inc(last.prompt_tokens)
        TOKENS.labels("completion").inc(last.completion_tokens)

    def _send(self, job: Job, chunk: GenerateChunk) -> None:
        cid = job.address.correlation_id
        chunk.correlation_id = cid
        headers = inject_context({CORRELATION_ID: cid})
        produce_outputs(
            self._producer, [Output(job.address.topic, cid, chunk, headers, partition=job.address.partition)]
        )


def _ms_since(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)
