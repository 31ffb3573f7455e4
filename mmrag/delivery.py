"""One delivery component for every loop (the stage run loop and the source publisher): produce a batch's outputs,
make them durable, and commit what was consumed, with one rule for what an error means.

- Fatal (e.g. fenced by a newer incarnation of the same transactional.id): raised; the process must stop and its
  supervisor restarts it.
- A record Kafka refuses for itself (too large, invalid): ``RejectedOutputsError`` names which outputs; the caller turns
  the items that made them into DLQ records and delivers again. Retrying the same record cannot help.
- Anything else (broker away, abortable transaction, commit retries used up): ``NotDeliveredError``; the transaction is
  aborted, nothing was committed, and the caller rewinds or re-offers the batch later (back-pressure, never DLQ).

Commit retries are bounded by ``commit_deadline_s``, which the settings keep below both the transaction timeout and
max.poll.interval.ms, so a slow commit never gets the consumer thrown out of its group. Every call of a batch runs
within a bound (``call_within``): one that blocks past its own timeout plus ``HANG_MARGIN_S`` (a coordinator
failover can hang librdkafka there, mmrag/watchdog.py) abandons the producer, makes a new one with the same
transactional id (fencing the hung one, aborting its transaction) and delivers the batch again on it at once, in
the same process; a second hang is ``NotDeliveredError`` (back-pressure). After ``MAX_REPLACED`` replacements, or
when ``init_transactions`` itself hangs, the ``CallWatchdog`` ends the process instead and its restart fences this
incarnation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from mmrag.kafka_clients import encode_headers
from mmrag.kafka_security import raise_if_denied
from mmrag.messages import Output, output_headers, serialize
from mmrag.watchdog import CallWatchdog, HungCallError, call_within, exit_stuck

log = logging.getLogger(__name__)

INIT_TIMEOUT_S = 30.0  # one init_transactions call
INIT_GIVE_UP_S = 180.0  # retries of init_transactions while the transaction coordinator moves
COORDINATOR_CALL_S = 2.0  # send_offsets_to_transaction's own timeout: ms normally, seconds while a coordinator moves
HANG_MARGIN_S = 0.5  # past its own timeout plus this, a call of a batch counts as hung and its producer is replaced
SLOW_DELIVERY_S = 1.0  # a transactional delivery taking longer is logged with its phases
MAX_REPLACED = 5  # producers abandoned (each leaves a parked thread) before the process restarts instead

# Per-record refusals: the broker or the client will refuse this record however often it is sent.
RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_MSG_SIZE,
    }
)


class NotDeliveredError(Exception):
    """Kafka did not take the batch (nothing committed); re-offer it later."""


class ProducerReplacedError(NotDeliveredError):
    """A call of the batch hung and the producer was replaced (Kafka answers again): redo the batch at once."""


class RejectedOutputsError(Exception):
    """Kafka refused these outputs themselves (by index into the delivered list), e.g. over the size limit."""

    def __init__(self, refused: dict[int, str]) -> None:
        self.refused = refused
        super().__init__(f"{len(refused)} record(s) refused: {sorted(set(refused.values()))[:3]}")


@dataclass(frozen=True)
class Encoded:
    """An output serialized once: what produce() sends."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int | None

    @property
    def size(self) -> int:
        return len(self.value or b"") + len(self.key or b"") + sum(len(k) + len(v) for k, v in self.headers)


def encode(output: Output) -> Encoded:
    return Encoded(
        output.topic,
        output.key.encode() if output.key is not None else None,
        serialize(output.value),
        encode_headers(output_headers(output)),
        output.partition,
    )


class _Reports:
    """Delivery reports by output index."""

    def __init__(self) -> None:
        self.failures: dict[int, KafkaError] = {}
        self.ends: dict[tuple[str, int], int] = {}  # per partition written: the offset after the last record

    def callback(self, index: int) -> Callable[[KafkaError | None, Message], None]:
        def report(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self.failures[index] = err
                return
            if msg is None:  # a report without its message tells nothing of where it landed
                return
            where, offset = (str(msg.topic()), int(msg.partition() or 0)), msg.offset()
            if offset is not None and offset >= 0:
                self.ends[where] = max(self.ends.get(where, 0), offset + 1)

        return report


class _Phases:
    """How long each phase of one transactional delivery took: logged when the whole took over ``SLOW_DELIVERY_S``
    (a failover shows where its seconds went)."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.phases: list[tuple[str, float]] = []

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.phases.append((phase, now - self.last))
        self.last = now

    def log_if_slow(self, stage: str) -> None:
        total = self.last - self.started
        if total > SLOW_DELIVERY_S:
            parts = ", ".join(f"{phase} {s:.1f} s" for phase, s in self.phases)
            log.info("%s: a batch's delivery took %.1f s (%s)", stage, total, parts)


class Delivery:
    """Delivers batches through one producer, transactional or not (see the module docstring for the rules)."""

    def __init__(
        self,
        make_producer: Callable[[], Any],
        *,
        transactional: bool,
        stage: str,
        commit_deadline_s: float,
        mark_dead: Callable[[str], None] | None = None,
        on_overrun: Callable[[str], None] = exit_stuck,
    ) -> None:
        self.make_producer = make_producer
        self.producer = make_producer()
        self.transactional = transactional
        self.stage = stage
        self.commit_deadline_s = commit_deadline_s
        self.on_overrun = on_overrun
        self.replaced = 0
        self.watchdog = CallWatchdog(stage, on_overrun, mark_dead)

    def start_transactions(self, give_up_s: float = INIT_GIVE_UP_S) -> None:
        """init_transactions (transactional producers only): fences a previous incarnation of the same
        transactional.id and aborts what it left open. Retried while Kafka says it may succeed (a coordinator moving
        after a broker failure answers NOT_COORDINATOR or times out for a while), up to ``give_up_s``."""
        if not self.transactional:
            return
        deadline = time.monotonic() + give_up_s
        while True:
            try:
                with self.watchdog.guard("init_transactions", INIT_TIMEOUT_S):
                    self.producer.init_transactions(INIT_TIMEOUT_S)
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.fatal() or not err.retriable() or time.monotonic() > deadline:
                    raise
                log.warning("%s: init_transactions not done yet (%s); retrying", self.stage, err)
                time.sleep(1.0)

    def _call(self, method: str, *args: Any, timeout_s: float) -> Any:
        """``producer.<method>(*args, timeout_s)`` within that timeout plus HANG_MARGIN_S; when it hangs, the
        producer is replaced and this try of the batch fails (ProducerReplacedError)."""
        call = partial(getattr(self.producer, method), *args, timeout_s)
        try:
            return call_within(self.stage, method, timeout_s + HANG_MARGIN_S, call)
        except HungCallError as hung:
            self._replace_producer(hung)
            raise ProducerReplacedError(f"{hung}; producer replaced, batch to be redone") from hung

    def _replace_producer(self, hung: HungCallError) -> None:
        """Abandons the hung producer (its thread stays parked in librdkafka; nothing touches it again) for a new one
        with the same transactional id, whose init_transactions fences it and aborts its open transaction."""
        self.replaced += 1
        if self.replaced > MAX_REPLACED:
            self.on_overrun(f"{hung}; {MAX_REPLACED} producers replaced already")
        log.warning("%s; replacing the producer (%d so far) and delivering the batch again", hung, self.replaced)
        started = time.monotonic()
        self.producer = self.make_producer()
        self.start_transactions()
        log.info("%s: new producer ready in %.1f s", self.stage, time.monotonic() - started)

    def deliver(
        self,
        outputs: Sequence[Encoded],
        offsets: Sequence[Any] = (),
        group_metadata: Any = None,
        before_commit: Callable[[], None] | None = None,
        alone: Collection[int] = (),
    ) -> dict[tuple[str, int], int]:
        """Makes ``outputs`` durable; in a transaction, commits ``offsets`` with them. Outputs whose index is in
        ``alone`` travel in a produce request of their own (a broker refuses a whole request batch, so this tells
        which record it refuses). Returns, per (topic, partition) written, the offset after its last record (a
        transaction's records are visible to read_committed readers only once it returns). Raises
        NotDeliveredError, RejectedOutputsError or (fatal) KafkaException; nothing is committed unless it returns.
        A call that hung costs a new producer and one more try, at once."""
        try:
            return self._deliver_once(outputs, offsets, group_metadata, before_commit, alone)
        except ProducerReplacedError:  # logged when it was replaced
            return self._deliver_once(outputs, offsets, group_metadata, before_commit, alone)

    def _deliver_once(
        self,
        outputs: Sequence[Encoded],
        offsets: Sequence[Any],
        group_metadata: Any,
        before_commit: Callable[[], None] | None,
        alone: Collection[int],
    ) -> dict[tuple[str, int], int]:
        if not self.transactional:
            ends = self._produce_and_flush(outputs, alone)
            if before_commit is not None:
                before_commit()
            return ends
        producer = self.producer
        took = _Phases()
        try:
            producer.begin_transaction()
            ends = self._produce_and_flush(outputs, alone)
            took.mark("produce")
            if before_commit is not None:
                before_commit()
                took.mark("before commit")
            if offsets:
                self._call("send_offsets_to_transaction", list(offsets), group_metadata, timeout_s=COORDINATOR_CALL_S)
                took.mark("offsets")
            self._commit()
            took.mark("commit")
            return ends
        except (NotDeliveredError, RejectedOutputsError, KafkaException) as exc:
            took.mark("failed")
            if self.producer is producer:  # else replaced: the new one's init_transactions aborted it already
                self._abort(exc)
            if isinstance(exc, KafkaException):
                raise NotDeliveredError(f"transaction aborted: {exc.args[0]}") from exc
            raise
        finally:
            took.log_if_slow(self.stage)

    def _flush(self) -> int:
        return int(self._call("flush", timeout_s=self.commit_deadline_s))

    def _produce_and_flush(self, outputs: Sequence[Encoded], alone: Collection[int]) -> dict[tuple[str, int], int]:
        reports = _Reports()
        for index, out in enumerate(outputs):
            if index in alone:
                self._flush()
            self._produce(out, reports.callback(index))
            if index in alone:
                self._flush()
                if reports.failures:
                    break  # a transaction takes no more records after a failure: report this one
        left = self._flush()
        raise_if_denied(reports.failures.values())  # an ACL refusal: the deployable stops, nothing is dead-lettered
        refused = {i: err.str() for i, err in reports.failures.items() if err.code() in RECORD_ERRORS}
        if refused:
            raise RejectedOutputsError(refused)
        if left or reports.failures:
            errors = sorted({err.str() for err in reports.failures.values()})[:3]
            raise NotDeliveredError(f"{left} record(s) still queued, {len(reports.failures)} failed: {errors}")
        return reports.ends

    def _produce(self, out: Encoded, report: Callable[[KafkaError | None, Message], None]) -> None:
        kwargs: dict[str, Any] = {"key": out.key, "value": out.value, "headers": out.headers, "on_delivery": report}
        if out.partition is not None:
            kwargs["partition"] = out.partition
        while True:
            try:
                self.producer.produce(out.topic, **kwargs)
                return
            except BufferError:
                self.producer.poll(0.1)  # local queue full: let deliveries drain, then retry
            except KafkaException as exc:  # refused before sending, e.g. over message.max.bytes
                err: KafkaError = exc.args[0]
                if err.code() in RECORD_ERRORS:
                    report(err, None)  # type: ignore[arg-type]
                    return
                raise

    def _commit(self) -> None:
        """commit_transaction, retried while Kafka says it may succeed, within the commit deadline."""
        deadline = time.monotonic() + self.commit_deadline_s
        while True:
            left = max(1.0, deadline - time.monotonic())
            try:
                self._call("commit_transaction", timeout_s=left)
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.fatal() or err.txn_requires_abort() or not err.retriable() or left <= 1.0:
                    raise
                log.warning("%s: commit not confirmed yet (%s); retrying", self.stage, err)
                time.sleep(0.5)

    def _abort(self, cause: Exception) -> None:
        """Aborts the open transaction; a fatal error (fenced) propagates: this incarnation must stop."""
        if isinstance(cause, KafkaException) and cause.args[0].fatal():
            raise cause
        log.warning("%s: aborting the transaction (%s)", self.stage, cause)
        try:
            self._call("abort_transaction", timeout_s=self.commit_deadline_s)
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise
            raise NotDeliveredError(f"abort failed too: {exc.args[0]}") from exc
