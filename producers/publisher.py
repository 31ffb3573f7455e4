"""Publishes what an EventSource receives onto s3-events.v1, durably, before the source may forget it.

Each notification becomes one record per change, keyed by object_id (one-record S3 notification JSON, key encoded
as S3 does); a body that does not parse goes to the DLQ with its raw bytes, the source and the parse error. Plain
sources produce, flush and check every delivery report before acknowledging; a transactional source (backfill)
commits the batch and its checkpoint in one Kafka transaction, so a crash never re-emits what a commit sent.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context

from mmrag import metrics
from mmrag.backpressure import Backpressure
from mmrag.delivery import Delivery, NotDeliveredError, RejectedOutputsError, encode
from mmrag.dlq import Origin, dead_letter
from mmrag.errors import PermanentError, RetryableError
from mmrag.kafka_clients import make_producer
from mmrag.messages import Output
from mmrag.settings import BaseServiceSettings
from mmrag.telemetry import Probes, inject_context, setup_tracing
from producers.event_source import EventSource, Notification, SourceBatch
from producers.s3_events import parse_notification

log = logging.getLogger(__name__)
NOTIFICATION_SCHEMA = "s3-notification"


class ChangePublisher:
    """The run loop of every source deployable: receive -> parse -> produce -> durable -> acknowledge."""

    def __init__(
        self,
        settings: BaseServiceSettings,
        source: EventSource,
        stage: str,
        probes: Probes | None = None,
        transactional_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.stage = stage
        self.probes = probes or Probes(stage)
        self.transactional_id = transactional_id
        self.tracer = setup_tracing(stage)
        self.backpressure = Backpressure(stage, settings, self.probes)
        self.batches = 0
        self._stop = threading.Event()  # run()'s: a back-off ends early when the service stops
        self._delivery: Delivery | None = None

    def start(self) -> None:
        """Connects (a transactional producer fences an earlier incarnation first), then starts the source."""
        s = self.settings
        extra: dict[str, Any] = {"message.max.bytes": s.max_message_bytes}
        if self.transactional_id:
            extra["transaction.timeout.ms"] = s.transaction_timeout_ms
        self._delivery = Delivery(
            lambda: make_producer(s.bootstrap_servers, self.transactional_id, **extra),
            transactional=bool(self.transactional_id),
            stage=self.stage,
            commit_deadline_s=s.commit_deadline_s,
            mark_dead=self.probes.set_dead,
        )
        self._delivery.start_transactions()
        self.source.start()
        self.probes.set_ready(True)

    def run(self, stop: threading.Event) -> None:
        """Publishes until ``stop`` is set or a finite source is done."""
        self._stop = stop
        self.start()
        try:
            while not stop.is_set() and self.step() is not None:
                pass
        finally:
            self.probes.set_ready(False, "stopping")
            self.source.close()
            if self._delivery is not None:
                self._delivery.producer.flush(10)

    def step(self) -> int | None:
        """One batch; returns how many notifications were acknowledged (None when the source is done). A source
        that cannot be reached (RetryableError) is backed off from, readiness red, for as long as it takes."""
        try:
            batch = self.source.receive()
        except RetryableError as exc:
            self._back_off(exc)
            return 0
        self.backpressure.recovered()
        if batch is None:
            return None
        if not batch.notifications:
            return 0
        outputs, problems = self._outputs(batch)
        try:
            self._deliver(outputs + ([batch.checkpoint] if batch.checkpoint else []))
        except NotDeliveredError as exc:  # Kafka did not take the batch: the source must not acknowledge it
            log.error("%s: Kafka did not take %d notifications (%s)", self.stage, len(batch.notifications), exc)
            self.source.release(batch, str(exc))
            return 0
        self.source.acknowledge(batch, problems)
        metrics.INGESTED.labels(self.stage).inc(len(batch.notifications))
        return len(batch.notifications)

    def _back_off(self, cause: RetryableError) -> None:
        delay = self.backpressure.enter(cause)
        log.warning("%s: %s; retrying in %.1fs (outage %d)", self.stage, cause, delay, self.backpressure.outages)
        self._stop.wait(delay)

    def _outputs(self, batch: SourceBatch) -> tuple[list[Output], list[str | None]]:
        """Records for every notification of the batch, and per notification the problem that refused it (or None)."""
        outputs: list[Output] = []
        problems: list[str | None] = []
        for note in batch.notifications:
            records, problem = self._records(note)
            outputs += records
            problems.append(problem)
        return outputs, problems

    def _traced(self, change_id: str, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` with the context of a new trace for one change: each upload is a trace of its own, however
        many changes one notification or one batch of notifications carries."""
        attributes = {
            "messaging.system": "kafka",
            "messaging.kafka.message.key": change_id,
            "mmrag.source": headers["source"],
        }
        with self.tracer.start_as_current_span(
            f"{self.stage} publish", context=Context(), kind=trace.SpanKind.PRODUCER, attributes=attributes
        ):
            return inject_context(dict(headers))

    def _records(self, note: Notification) -> tuple[list[Output], str | None]:
        topics = self.settings.topics
        where = f"{self.source.name}:{note.source_id}"
        headers = {"source": self.source.name, "source-id": note.source_id}
        try:
            changes = parse_notification(note.body, where)
        except PermanentError as exc:
            metrics.DLQ.labels(self.stage).inc()
            log.error("%s: to DLQ %s: %s", self.stage, where, exc)
            origin = Origin(where)
            return [
                dead_letter(topics.dlq, note.source_id, note.body, headers, stage=self.stage, error=exc, origin=origin)
            ], str(exc)
        if not changes:
            log.info("%s: %s carried no changes (s3:TestEvent); acknowledged", self.stage, where)
        headers.update({"content-type": "application/json", "schema": NOTIFICATION_SCHEMA})
        traced = [(c, self._traced(c.object_id, headers)) for c in changes]
        return [Output(topics.s3_events, c.object_id, c.to_body(), carried) for c, carried in traced], None

    def _deliver(self, outputs: Sequence[Output]) -> None:
        """Through the runtime's one delivery component (same abort and commit rules as the stage run loop). A
        refused record cannot be isolated to one notification here, and cannot happen for bodies that size-checked
        sources bound far below MMRAG_MAX_MESSAGE_BYTES: the source re-offers the batch."""
        assert self._delivery is not None, "start() first"
        try:
            self._delivery.deliver([encode(o) for o in outputs], before_commit=self._fault_hold)
        except (NotDeliveredError, RejectedOutputsError) as exc:
            raise NotDeliveredError(str(exc)) from exc
        self.batches += 1

    def _fault_hold(self) -> None:
        """Fault tests only: once the open transaction's records are on the broker, announce it in
        <state_dir>/hold-<stage>, then wait (to be killed)."""
        hold = self.settings.fault_hold_before_commit_s
        if hold <= 0:
            return
        marker = self.settings.state_dir / f"hold-{self.stage}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.with_suffix(".tmp").write_text(json.dumps({"committed_batches": self.batches}))
        marker.with_suffix(".tmp").replace(marker)  # atomic: a reader never sees a half-written marker
        time.sleep(hold)
