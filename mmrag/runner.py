"""The one run loop: poll -> batch -> decode (bad bytes -> DLQ) -> handler -> produce -> flush -> commit.

Consume-transform-produce stages run each batch in a Kafka transaction whose offsets commit with it; sink stages
(effects outside Kafka) make their effect durable inside the handler, flush what they produced, then commit.

Failure rule (docs/architecture.md "Delivery guarantees"): a RetryableError means the world is broken, not the item:
after a few quick retries the stage backs off (readiness red with the reason, assignment paused, batch rewound,
polling on) and tries again, for as long as it takes; nothing goes to the DLQ for it. Any other failure is the
item's: a failing batch is isolated item by item and only items that fail alone are dead-lettered.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from confluent_kafka import KafkaException, Message, TopicPartition
from opentelemetry import trace
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_random_exponential

from mmrag import metrics
from mmrag.backpressure import Backpressure
from mmrag.delivery import Delivery, Encoded, NotDeliveredError, RejectedOutputsError, encode
from mmrag.dlq import Origin, dead_letter
from mmrag.errors import PermanentError, RetryableError
from mmrag.kafka_clients import decode_headers, make_consumer, make_producer
from mmrag.kafka_security import raise_if_denied
from mmrag.messages import Envelope, Output, now_ms
from mmrag.poll_keeper import PollKeeper
from mmrag.settings import BaseServiceSettings
from mmrag.telemetry import Probes
from mmrag.tracing import extract_context, inject_context, message_links, setup_tracing, span_attributes

log = logging.getLogger(__name__)

T = TypeVar("T")
Decoder = Callable[[bytes | None, Mapping[str, str]], Any]
ItemResult = Sequence[Output] | Exception


class BatchHandler(Protocol[T]):
    """A stage's logic over decoded messages: one result per envelope, either outputs or the item's error.

    Optional hooks, for handlers with state that must move with the committed offsets: ``on_assign(partitions)``
    restores state for the full assignment (run by the loop on paused partitions, never inside the rebalance
    callback), ``on_commit()`` after a batch's outputs and offsets committed, ``on_abort()`` when a batch's
    effects were dropped (retry, aborted transaction, rewind): state changed by that batch must be undone."""

    stage: str

    def warm_up(self) -> None: ...

    def handle(self, batch: Sequence[Envelope[T]]) -> Sequence[ItemResult]: ...


class VisibilityGate(Protocol):
    """A handler's ``visibility_gate`` (non-transactional stages): the batch's outputs to ``topics`` are held back
    until the others are durable and ``wait`` (given where those landed, per (topic, partition) the offset after the
    last record, and the held outputs' keys) returns; a RetryableError from it redoes the batch after a back-off."""

    topics: frozenset[str]

    def wait(self, delivered: Mapping[tuple[str, int], int], held_keys: Sequence[bytes | None]) -> None: ...


class OutageError(Exception):
    """A batch could not be handled because a dependency is down (its RetryableError is the cause)."""


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
        eager: bool = False,
    ) -> None:
        """``eager``: a batch is what has arrived when the first message does (request-reply stages: a request
        never waits for others to fill a batch), its offsets committed in the background; else up to ``max_batch``
        messages within ``max_wait_ms``, offsets committed before the next batch."""
        self.settings = settings
        self.eager = eager
        self.handler = handler
        self.stage = handler.stage
        self.group = group
        self.decoders = dict(decoders)
        self.transactional = transactional
        self.probes = probes or Probes(self.stage)
        self.tracer = setup_tracing(self.stage)
        for family in (metrics.INGESTED, metrics.DLQ, metrics.RETRIES):
            family.labels(self.stage)  # served at 0 from the start, so rate() sees the first messages
        self.consumer_overrides = dict(consumer_overrides or {})
        self.producer_overrides = dict(producer_overrides or {})
        self.backpressure = Backpressure(self.stage, settings, self.probes)
        self._suspects: set[tuple[str, int, int]] = set()  # inputs whose output Kafka refused in a shared request
        self._consumer: Any = None
        self._keeper: PollKeeper | None = None
        self._delivery: Delivery | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self, stop: threading.Event | None = None) -> None:
        """Connects clients, subscribes and warms the handler up; readiness turns green afterwards."""
        s = self.settings
        consumer_extra = {"max.poll.interval.ms": s.max_poll_interval_ms, **self.consumer_overrides}
        self._consumer = make_consumer(s.bootstrap_servers, self.group, **consumer_extra)
        txn_id = f"{self.group}.{s.instance_id}" if self.transactional else None
        producer_extra: dict[str, Any] = {"message.max.bytes": s.max_message_bytes, **self.producer_overrides}
        if txn_id:
            producer_extra["transaction.timeout.ms"] = s.transaction_timeout_ms
        self._delivery = Delivery(
            lambda: make_producer(s.bootstrap_servers, txn_id, **producer_extra),
            transactional=self.transactional,
            stage=self.stage,
            commit_deadline_s=s.commit_deadline_s,
            mark_dead=self.probes.set_dead,
        )
        self._delivery.start_transactions()  # fences a previous incarnation, aborts what it left open
        keeper = self._keeper = PollKeeper(self._consumer, self.stage)
        restore = callable(getattr(self.handler, "on_assign", None))
        self._consumer.subscribe(
            list(self.decoders),
            on_assign=lambda consumer, tps: keeper.on_assign(consumer, tps, restore),
            on_revoke=keeper.on_revoke,
        )
        if not self._warm_up(stop):
            return  # stopped while waiting for a dependency
        self.probes.set_ready(True)
        log.info("%s: group %s consuming %s (transactional=%s)", self.stage, self.group, list(self.decoders), txn_id)

    def run(self, stop: threading.Event) -> None:
        """Processes batches until ``stop`` is set; fatal Kafka errors propagate (the supervisor restarts us)."""
        self.start(stop)
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.close()

    def close(self) -> None:
        self.probes.set_ready(False, "stopping")
        if self._keeper is not None:
            self._keeper.close()
        if self._consumer is not None:
            self._consumer.close()
        if self._delivery is not None:
            self._delivery.producer.flush(10)

    @property
    def keeper(self) -> PollKeeper:
        assert self._keeper is not None, "start() first"
        return self._keeper

    # -- one batch -------------------------------------------------------------------------------------------

    def _poll(self) -> list[Message]:
        """One poll batch. librdkafka's consume(n, timeout) returns when n messages are there or the timeout is
        over, so a lone message waits the whole timeout; eager, the first message ends the wait and whatever
        else is already fetched joins it."""
        s = self.settings
        if not self.eager:
            return list(self._consumer.consume(s.max_batch, s.max_wait_ms / 1000))
        first = list(self._consumer.consume(1, s.max_wait_ms / 1000))
        if not first or s.max_batch <= 1:
            return first
        return first + list(self._consumer.consume(s.max_batch - 1, 0))

    def step(self) -> int:
        """Polls one batch and carries it through to a commit. Returns how many messages it committed (0 when the
        batch was rewound because a dependency is down: it comes again after the back-off)."""
        self._restore_assigned()
        raw = self._poll()
        batch = _Batch([_Item(_Consumed.of(m)) for m in raw if not self._is_transport_error(m)])
        if not batch.items:
            return 0
        metrics.BATCH_SIZE.labels(self.stage).observe(len(batch.items))
        received = now_ms()
        for item in batch.items:
            metrics.QUEUE_WAIT.labels(self.stage).observe(max(0, received - item.raw.timestamp_ms) / 1000)
        self._decode(batch)
        with self._batch_span(batch):
            try:
                with metrics.HANDLE_SECONDS.labels(self.stage).time():
                    self.keeper.run(lambda: self._handle(batch))
                self._time_spans(batch, "handled_after_ms", received)
                with metrics.COMMIT_SECONDS.labels(self.stage).time():
                    self._commit(batch)
                self._time_spans(batch, "committed_after_ms", received)
            except (OutageError, NotDeliveredError) as exc:
                self._back_off(batch, exc)
                return 0
        self.backpressure.recovered()
        self._record(batch)
        return len(batch.items)

    def _restore_assigned(self) -> None:
        """Restores handler state for newly assigned partitions while they stay paused and the consumer polls."""
        keeper = self.keeper
        if not keeper.to_restore:
            return
        revocations = keeper.revocations
        partitions = sorted(keeper.assigned)
        keeper.run(lambda: self.handler.on_assign(partitions), quiet_s=0)  # type: ignore[attr-defined]
        if keeper.revocations == revocations:  # else the assignment changed meanwhile: restore again
            keeper.to_restore.clear()
            keeper.resume_ready()

    def _is_transport_error(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return False
        raise_if_denied([err])  # an ACL refusal is a deployment error: no retry, no DLQ
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
                attributes={
                    "messaging.system": "kafka",
                    "messaging.destination.name": raw.topic,
                    "messaging.destination.partition.id": str(raw.partition),
                    "messaging.kafka.offset": raw.offset,
                    "messaging.kafka.message.key": raw.key or "",
                    "messaging.consumer.group.name": self.group,
                    **span_attributes(
                        version=raw.headers.get("version"),
                        batch_size=len(batch.items),
                        queue_wait_ms=max(0, now_ms() - raw.timestamp_ms),
                    ),
                },
            )

    def _handle(self, batch: _Batch) -> None:
        """Runs the handler with a few quick jittered retries of a RetryableError (then OutageError); a batch failing
        otherwise is retried item by item, so only the items that fail alone carry an error."""
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
                    if attempts > 1:
                        self._hook("on_abort")  # the failed attempt's state changes
                    results = _outage_checked(self.handler.handle([item.envelope for item in todo]))  # type: ignore[misc]
        except RetryableError as exc:
            raise OutageError(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - a failure becomes DLQ records, never a crash of the loop
            self._hook("on_abort")
            if len(todo) == 1:
                results = [exc]
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
            return _outage_checked(self.handler.handle([item.envelope]))[0]  # type: ignore[list-item]
        except RetryableError as exc:
            raise OutageError(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - every failure of an isolated item becomes its DLQ record
            return exc

    def _hook(self, name: str) -> None:
        hook = getattr(self.handler, name, None)
        if callable(hook):
            hook()

    # -- produce and commit ----------------------------------------------------------------------------------

    def _commit(self, batch: _Batch) -> None:
        """Delivers outputs (and, in a transaction, the offsets); an item whose output Kafka refuses for itself
        (too large) is dead-lettered and the batch delivered again. Raises NotDeliveredError when Kafka is away."""
        assert self._delivery is not None
        refused_before = False
        for _ in range(8):
            encoded, owners = self._encoded(batch)
            alone = {i for i, owner in enumerate(owners) if _position(owner) in self._suspects}
            try:
                self._deliver_waves(batch, encoded, alone)
            except NotDeliveredError:
                if not refused_before:
                    raise
                time.sleep(0.5)  # after a refused record the producer bumps its epoch; a transaction meanwhile fails
                continue
            except RejectedOutputsError as exc:
                refused_before = True
                for index, reason in exc.refused.items():
                    if index in alone or len(exc.refused) == 1:
                        owners[index].error = self._refused(owners[index], reason)
                    else:  # refused together with others: which one is too large shows when each goes alone
                        self._suspects.add(_position(owners[index]))
                continue
            self._suspects.clear()
            if not self.transactional:
                self._commit_offsets(batch)
            self._hook("on_commit")
            return
        raise NotDeliveredError(f"{self.stage}: Kafka kept refusing records of this batch")

    def _deliver_waves(self, batch: _Batch, encoded: list[Encoded], alone: set[int]) -> None:
        """Delivers the batch's outputs in one go; with the handler's visibility gate, the gated topics' outputs in
        a second delivery once the gate let them go. Refusals name indexes of ``encoded``."""
        assert self._delivery is not None
        gate: VisibilityGate | None = getattr(self.handler, "visibility_gate", None)
        everything = list(range(len(encoded)))
        waves = [everything]
        if gate is not None and not self.transactional:
            waves = [[i for i in everything if encoded[i].topic not in gate.topics]]
            waves.append([i for i in everything if encoded[i].topic in gate.topics])
        delivered: dict[tuple[str, int], int] = {}
        for n, wave in enumerate(waves):
            if n:
                assert gate is not None
                try:
                    self.keeper.run(partial(gate.wait, delivered, [encoded[i].key for i in wave]))
                except RetryableError as exc:
                    raise OutageError(str(exc)) from exc
            try:
                delivered = self._delivery.deliver(
                    [encoded[i] for i in wave],
                    batch.offsets() if self.transactional else (),
                    self._consumer.consumer_group_metadata() if self.transactional else None,
                    before_commit=(lambda: self._fault_hold(batch)) if n == len(waves) - 1 else None,
                    alone={k for k, i in enumerate(wave) if i in alone},
                )
            except RejectedOutputsError as exc:
                raise RejectedOutputsError({wave[k]: reason for k, reason in exc.refused.items()}) from exc

    def _encoded(self, batch: _Batch) -> tuple[list[Encoded], list[_Item]]:
        """Every output of the batch serialized once, with the item that made it; an item whose output is over
        MMRAG_MAX_MESSAGE_BYTES is dead-lettered instead (Kafka would refuse it however often it is sent)."""
        encoded: list[Encoded] = []
        owners: list[_Item] = []
        for item in batch.items:
            if item.error is None:
                mine = [encode(self._traced(item, out)) for out in item.outputs]
                too_big = max((e.size for e in mine), default=0)
                if too_big > self.settings.max_message_bytes:
                    item.error = self._refused(item, f"output of {too_big} bytes")
            if item.error is not None:
                mine = [encode(self._dead_letter(item))]
            encoded += mine
            owners += [item] * len(mine)
        return encoded, owners

    def _refused(self, item: _Item, reason: str) -> PermanentError:
        return PermanentError(
            self.stage,
            item.raw.key or f"{item.raw.topic}[{item.raw.partition}]@{item.raw.offset}",
            f"Kafka refuses its output ({reason}; limit MMRAG_MAX_MESSAGE_BYTES={self.settings.max_message_bytes})",
            "raise MMRAG_MAX_MESSAGE_BYTES (and the topic's max.message.bytes via `mmrag topics`), or split the input",
        )

    def _traced(self, item: _Item, out: Output) -> Output:
        headers = dict(out.headers)
        if item.span is not None:
            inject_context(headers, trace.set_span_in_context(item.span))
        return Output(out.topic, out.key, out.value, headers, out.partition)

    def _dead_letter(self, item: _Item) -> Output:
        assert item.error is not None
        metrics.FAILED.labels(self.stage, type(item.error).__name__).inc()
        metrics.DLQ.labels(self.stage).inc()
        raw = item.raw
        log.error("%s: to DLQ %s[%d]@%d: %s", self.stage, raw.topic, raw.partition, raw.offset, item.error)
        return dead_letter(
            self.settings.topics.dlq,
            raw.key,
            raw.value,
            raw.headers,
            stage=self.stage,
            error=item.error,
            origin=Origin(raw.topic, raw.partition, raw.offset),
            attempts=item.attempts + _attempts_before(raw.headers),
            first_failure_ms=item.first_failure_ms,
        )

    def _commit_offsets(self, batch: _Batch) -> None:
        """Synchronously, but eager (request-reply) stages commit in the background: a request answered again after
        a crash is a duplicate reply its caller drops, not worth a broker round trip before the next request."""
        try:
            self._consumer.commit(offsets=batch.offsets(), asynchronous=self.eager)
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise
            # Typically a rebalance: the effects are durable and idempotent, so whoever owns the partitions
            # next redoes this batch harmlessly from the last committed offset.
            log.warning("%s: offset commit failed (%s); the batch may be redelivered", self.stage, exc)

    # -- back-pressure -----------------------------------------------------------------------------------------

    def _back_off(self, batch: _Batch, cause: Exception) -> None:
        """A dependency is down: drop the batch's effects, rewind to its start, turn readiness red with the reason
        and wait (polling, assignment paused) with growing jittered back-off. Lag grows; nothing is dead-lettered."""
        self._hook("on_abort")
        self._rewind(batch)
        self._end_spans(batch, f"backed off: {cause}")
        delay = self.backpressure.enter(cause)
        outages = self.backpressure.outages
        log.warning("%s: %s; batch rewound, retrying in %.1fs (outage %d)", self.stage, cause, delay, outages)
        self.keeper.wait(delay)

    def _warm_up(self, stop: threading.Event | None) -> bool:
        """Warms the handler up; a dependency that is down (RetryableError: Milvus starting, a collection another
        process is creating) is waited for like any outage, in the group, readiness red with the reason. False
        when ``stop`` was set meanwhile."""
        while True:
            try:
                self.handler.warm_up()
            except RetryableError as exc:
                delay = self.backpressure.enter(exc)
                log.warning("%s: warm-up waits for a dependency: %s; next try in %.1fs", self.stage, exc, delay)
                self.keeper.wait(delay)
                if stop is not None and stop.is_set():
                    return False
                continue
            self.backpressure.recovered()
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

    def _batch_span(self, batch: _Batch) -> Any:
        """The span of the batch as a whole, linking every message's context (OTel's rule for batch consumers);
        each message keeps its own span in its trace besides."""
        return self.tracer.start_as_current_span(
            f"{self.stage} batch",
            kind=trace.SpanKind.CONSUMER,
            links=message_links(item.raw.headers for item in batch.items),
            attributes={"messaging.batch.message_count": len(batch.items), "messaging.consumer.group.name": self.group},
        )

    @staticmethod
    def _time_spans(batch: _Batch, name: str, since_ms: int) -> None:
        """Records on every message's span how long after the batch arrived a step of it ended."""
        elapsed = now_ms() - since_ms
        for item in batch.items:
            if item.span is not None:
                item.span.set_attribute(f"mmrag.{name}", elapsed)

    def _end_spans(self, batch: _Batch, error: str | None = None) -> None:
        for item in batch.items:
            if item.span is None:
                continue
            if error or item.error is not None:
                item.span.set_status(trace.Status(trace.StatusCode.ERROR, error or str(item.error)))
            item.span.end()
            item.span = None

    def _record(self, batch: _Batch) -> None:
        ok = sum(1 for item in batch.items if item.error is None)
        metrics.INGESTED.labels(self.stage).inc(ok)
        self._end_spans(batch)
        for tp in batch.offsets():
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                metrics.LAG.labels(self.stage, tp.topic, str(tp.partition)).set(max(0, high - tp.offset))


def _outage_checked(results: Sequence[ItemResult]) -> Sequence[ItemResult]:
    """A RetryableError returned as one item's result is an outage of the whole batch, like one raised."""
    for result in results:
        if isinstance(result, RetryableError):
            raise result
    return results


def _position(item: _Item) -> tuple[str, int, int]:
    return item.raw.topic, item.raw.partition, item.raw.offset


def _attempts_before(headers: Mapping[str, str]) -> int:
    """Attempts a replayed DLQ record already had (`mmrag dlq replay` carries them in dlq-attempts)."""
    try:
        return int(headers.get("dlq-attempts", "0") or 0)
    except ValueError:
        return 0
