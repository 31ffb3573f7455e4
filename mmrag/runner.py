"""The one run loop: poll -> batch -> decode (bad bytes -> DLQ) -> handler -> produce -> flush -> commit.

Consume-transform-produce stages run each batch in a Kafka transaction whose offsets commit with it; sink stages
(effects outside Kafka) make their effect durable inside the handler, flush what they produced, then commit.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from opentelemetry import trace
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_random_exponential

from mmrag import metrics
from mmrag.dlq import Origin, dead_letter
from mmrag.errors import PermanentError, RetryableError
from mmrag.kafka_clients import decode_headers, make_consumer, make_producer
from mmrag.messages import Envelope, Output, now_ms
from mmrag.producing import Deliveries, flush_or_raise, produce_outputs
from mmrag.settings import BaseServiceSettings
from mmrag.telemetry import Probes, extract_context, inject_context, setup_tracing

log = logging.getLogger(__name__)

T = TypeVar("T")
Decoder = Callable[[bytes | None, Mapping[str, str]], Any]
ItemResult = Sequence[Output] | Exception


class BatchHandler(Protocol[T]):
    """A stage's logic over decoded messages: one result per envelope, either outputs or the item's error."""

    stage: str

    def warm_up(self) -> None: ...

    def handle(self, batch: Sequence[Envelope[T]]) -> Sequence[ItemResult]: ...


@dataclass(frozen=True)
class _Consumed:
    """The parts of a consumed Kafka message the runner uses, typed once at the edge."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes | None
    headers: dict[str, str]
    timestamp_ms: int

    @classmethod
    def of(cls, msg: Message) -> _Consumed:
        key = msg.key()
        value = msg.value()
        return cls(
            topic=str(msg.topic()),
            partition=int(msg.partition() or 0),
            offset=int(msg.offset() or 0),
            key=key.decode(errors="replace") if isinstance(key, bytes) else key,
            value=value.encode() if isinstance(value, str) else value,
            headers=decode_headers(msg.headers()),  # type: ignore[arg-type]
            timestamp_ms=msg.timestamp()[1],
        )


@dataclass
class _Item:
    raw: _Consumed
    envelope: Envelope[Any] | None = None
    error: Exception | None = None
    outputs: Sequence[Output] = ()
    attempts: int = 0
    first_failure_ms: int = 0
    span: Any = None


@dataclass
class _Batch:
    items: list[_Item] = field(default_factory=list)

    def offsets(self) -> list[TopicPartition]:
        """The next offset to read per partition: what a commit of this batch records."""
        last: dict[tuple[str, int], int] = {}
        for item in self.items:
            tp = (item.raw.topic, item.raw.partition)
            last[tp] = max(last.get(tp, -1), item.raw.offset)
        return [TopicPartition(t, p, off + 1) for (t, p), off in last.items()]

    def first_offsets(self) -> list[TopicPartition]:
        first: dict[tuple[str, int], int] = {}
        for item in self.items:
            tp = (item.raw.topic, item.raw.partition)
            first[tp] = min(first.get(tp, item.raw.offset), item.raw.offset)
        return [TopicPartition(t, p, off) for (t, p), off in first.items()]


class StageRunner(Generic[T]):
    """Runs one handler over its input topics with the delivery guarantees of docs/architecture.md."""

    def __init__(
        self,
        settings: BaseServiceSettings,
        handler: BatchHandler[T],
        *,
        group: str,
        decoders: Mapping[str, Decoder],
        transactional: bool,
        probes: Probes | None = None,
        consumer_overrides: Mapping[str, Any] | None = None,
        producer_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.stage = handler.stage
        self.group = group
        self.decoders = dict(decoders)
        self.transactional = transactional
        self.probes = probes or Probes(self.stage)
        self.tracer = setup_tracing(self.stage)
        self.consumer_overrides = dict(consumer_overrides or {})
        self.producer_overrides = dict(producer_overrides or {})
        self._consumer: Any = None
        self._producer: Any = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connects clients, subscribes and warms the handler up; readiness turns green afterwards."""
        s = self.settings
        self._consumer = make_consumer(s.bootstrap_servers, self.group, **self.consumer_overrides)
        txn_id = f"{self.group}.{s.instance_id}" if self.transactional else None
        producer_extra = dict(self.producer_overrides)
        if txn_id:
            producer_extra["transaction.timeout.ms"] = s.transaction_timeout_ms
        self._producer = make_producer(s.bootstrap_servers, txn_id, **producer_extra)
        if self.transactional:
            # Fences a previous incarnation with the same id and aborts whatever it left open.
            self._producer.init_transactions(30)
        self._consumer.subscribe(list(self.decoders), **self._rebalance_callbacks())
        self.handler.warm_up()
        self.probes.set_ready(True)
        log.info(
            "%s: group %s consuming %s (transactional=%s)",
            self.stage,
            self.group,
            list(self.decoders),
            self.transactional,
        )

    def _rebalance_callbacks(self) -> dict[str, Any]:
        """A handler with ``on_assign(partitions)`` restores its per-partition state there, before their first batch
        (the full assignment as (topic, partition) pairs; called inside the poll, so keep it within max.poll)."""
        on_assign = getattr(self.handler, "on_assign", None)
        if on_assign is None:
            return {}
        return {"on_assign": lambda _consumer, tps: on_assign([(tp.topic, tp.partition) for tp in tps])}

    def run(self, stop: threading.Event) -> None:
        """Processes batches until ``stop`` is set; fatal Kafka errors propagate (the supervisor restarts us)."""
        self.start()
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.close()

    def close(self) -> None:
        self.probes.set_ready(False, "stopping")
        if self._consumer is not None:
            self._consumer.close()
        if self._producer is not None:
            self._producer.flush(10)

    # -- one batch -------------------------------------------------------------------------------------------

    def step(self) -> int:
        """Polls one batch and carries it through to a commit. Returns how many messages it consumed."""
        raw = self._consumer.consume(self.settings.max_batch, self.settings.max_wait_ms / 1000)
        batch = _Batch([_Item(_Consumed.of(m)) for m in raw if not self._is_transport_error(m)])
        if not batch.items:
            return 0
        metrics.BATCH_SIZE.labels(self.stage).observe(len(batch.items))
        received = now_ms()
        for item in batch.items:
            metrics.QUEUE_WAIT.labels(self.stage).observe(max(0, received - item.raw.timestamp_ms) / 1000)
        self._decode(batch)
        with metrics.HANDLE_SECONDS.labels(self.stage).time():
            self._handle(batch)
        with metrics.COMMIT_SECONDS.labels(self.stage).time():
            committed = self._commit(batch)
        if committed:
            self._record(batch)
        return len(batch.items)

    def _is_transport_error(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return False
        if err.fatal():
            raise KafkaException(err)
        log.warning("%s: consumer error %s", self.stage, err)
        return True

    def _decode(self, batch: _Batch) -> None:
        for item in batch.items:
            raw = item.raw
            try:
                value = self.decoders[raw.topic](raw.value, raw.headers)
            except PermanentError as exc:
                item.error, item.attempts, item.first_failure_ms = exc, 1, now_ms()
                continue
            item.envelope = Envelope(
                raw.key, value, raw.headers, raw.topic, raw.partition, raw.offset, raw.timestamp_ms
            )
            item.span = self.tracer.start_span(
                self.stage,
                context=extract_context(raw.headers),
                kind=trace.SpanKind.CONSUMER,
                attributes={"messaging.destination.name": raw.topic, "messaging.kafka.offset": raw.offset},
            )

    def _handle(self, batch: _Batch) -> None:
        """Runs the handler with bounded jittered retries; a batch that fails otherwise is retried item by item."""
        todo = [item for item in batch.items if item.envelope is not None]
        if not todo:
            return
        start_ms = now_ms()
        attempts = 0
        s = self.settings
        retrying = Retrying(
            retry=retry_if_exception_type(RetryableError),
            stop=stop_after_attempt(s.retry_attempts) | stop_after_delay(s.retry_max_total_s),
            wait=wait_random_exponential(multiplier=s.retry_initial_s, max=s.retry_max_s),
            before_sleep=lambda rs: metrics.RETRIES.labels(self.stage).inc(),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    results = self.handler.handle([item.envelope for item in todo])  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - a failure becomes DLQ records, never a crash of the loop
            if len(todo) == 1 or isinstance(exc, RetryableError):
                results = [exc] * len(todo)
            else:
                log.warning("%s: batch of %d failed (%s); isolating items", self.stage, len(todo), exc)
                results = [self._handle_one(item) for item in todo]
        for item, result in zip(todo, results, strict=True):
            item.attempts = attempts
            if isinstance(result, Exception):
                item.error, item.first_failure_ms = result, start_ms
            else:
                item.outputs = result

    def _handle_one(self, item: _Item) -> ItemResult:
        try:
            return self.handler.handle([item.envelope])[0]  # type: ignore[list-item]
        except Exception as exc:  # noqa: BLE001 - every failure of an isolated item becomes its DLQ record
            return exc

    # -- produce and commit ----------------------------------------------------------------------------------

    def _outputs(self, batch: _Batch) -> list[Output]:
        outputs: list[Output] = []
        for item in batch.items:
            if item.error is not None:
                outputs.append(self._dead_letter(item))
                continue
            for out in item.outputs:
                headers = dict(out.headers)
                if item.span is not None:
                    inject_context(headers, trace.set_span_in_context(item.span))
                outputs.append(Output(out.topic, out.key, out.value, headers, out.partition))
        return outputs

    def _dead_letter(self, item: _Item) -> Output:
        assert item.error is not None
        metrics.FAILED.labels(self.stage, type(item.error).__name__).inc()
        metrics.DLQ.labels(self.stage).inc()
        log.error(
            "%s: to DLQ %s[%d]@%d: %s",
            self.stage,
            item.raw.topic,
            item.raw.partition,
            item.raw.offset,
            item.error,
        )
        raw = item.raw
        return dead_letter(
            self.settings.topics.dlq,
            raw.key,
            raw.value,
            raw.headers,
            stage=self.stage,
            error=item.error,
            origin=Origin(raw.topic, raw.partition, raw.offset),
            attempts=item.attempts,
            first_failure_ms=item.first_failure_ms,
        )

    def _commit(self, batch: _Batch) -> bool:
        outputs = self._outputs(batch)
        if self.transactional:
            return self._commit_transaction(batch, outputs)
        return self._commit_after_flush(batch, outputs)

    def _commit_transaction(self, batch: _Batch, outputs: list[Output]) -> bool:
        producer = self._producer
        try:
            producer.begin_transaction()
            produce_outputs(producer, outputs)
            self._fault_hold(batch)
            producer.send_offsets_to_transaction(batch.offsets(), self._consumer.consumer_group_metadata(), 30)
            self._commit_with_retries()
            return True
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.fatal():
                raise  # e.g. fenced by a newer incarnation: this process must stop
            log.warning("%s: transaction aborted (%s); rewinding to the batch start", self.stage, err)
            producer.abort_transaction(30)
            self._rewind(batch)
            return False

    def _commit_with_retries(self) -> None:
        for _ in range(10):
            try:
                self._producer.commit_transaction(30)
                return
            except KafkaException as exc:
                if not exc.args[0].retriable():
                    raise
                time.sleep(0.5)
        self._producer.commit_transaction(30)

    def _commit_after_flush(self, batch: _Batch, outputs: list[Output]) -> bool:
        deliveries = Deliveries()
        produce_outputs(self._producer, outputs, deliveries)
        try:
            flush_or_raise(self._producer, deliveries)
        except RuntimeError as exc:
            log.error("%s: outputs not delivered (%s); rewinding, nothing committed", self.stage, exc)
            self._rewind(batch)
            return False
        self._fault_hold(batch)
        try:
            self._consumer.commit(offsets=batch.offsets(), asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise
            # Typically a rebalance: the effects are durable and idempotent, so whoever owns the partitions
            # next redoes this batch harmlessly from the last committed offset.
            log.warning("%s: offset commit failed (%s); the batch may be redelivered", self.stage, exc)
            return False
        return True

    def _rewind(self, batch: _Batch) -> None:
        for tp in batch.first_offsets():
            try:
                self._consumer.seek(tp)
            except KafkaException as exc:  # revoked meanwhile: its new owner starts at the committed offset
                log.info("%s: not rewinding %s[%d] (%s)", self.stage, tp.topic, tp.partition, exc)

    def _fault_hold(self, batch: _Batch) -> None:
        """Fault tests only: announce the uncommitted batch in a marker file, then wait (to be killed)."""
        hold = self.settings.fault_hold_before_commit_s
        if hold <= 0:
            return
        marker = self.settings.state_dir / f"hold-{self.stage}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps([[tp.topic, tp.partition, tp.offset] for tp in batch.offsets()]))
        time.sleep(hold)

    def _record(self, batch: _Batch) -> None:
        ok = sum(1 for item in batch.items if item.error is None)
        metrics.INGESTED.labels(self.stage).inc(ok)
        for item in batch.items:
            if item.span is not None:
                item.span.end()
        for tp in batch.offsets():
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                metrics.LAG.labels(self.stage, tp.topic, str(tp.partition)).set(max(0, high - tp.offset))
