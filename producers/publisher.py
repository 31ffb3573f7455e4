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

from confluent_kafka import KafkaException

from mmrag import metrics
from mmrag.dlq import Origin, dead_letter
from mmrag.errors import PermanentError
from mmrag.kafka_clients import make_producer
from mmrag.messages import Output
from mmrag.producing import Deliveries, flush_or_raise, produce_outputs
from mmrag.settings import BaseServiceSettings
from mmrag.telemetry import Probes, inject_context, setup_tracing
from producers.event_source import EventSource, Notification, SourceBatch
from producers.s3_events import parse_notification

log = logging.getLogger(__name__)
NOTIFICATION_SCHEMA = "s3-notification"


class NotDeliveredError(Exception):
    """Kafka did not take a batch: the source must not acknowledge it."""


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
        self.batches = 0
        self._producer: Any = None

    def start(self) -> None:
        """Connects (a transactional producer fences an earlier incarnation first), then starts the source."""
        extra = {"transaction.timeout.ms": self.settings.transaction_timeout_ms} if self.transactional_id else {}
        self._producer = make_producer(self.settings.bootstrap_servers, self.transactional_id, **extra)
        if self.transactional_id:
            self._producer.init_transactions(30)
        self.source.start()
        self.probes.set_ready(True)

    def run(self, stop: threading.Event) -> None:
        """Publishes until ``stop`` is set or a finite source is done."""
        self.start()
        try:
            while not stop.is_set() and self.step() is not None:
                pass
        finally:
            self.probes.set_ready(False, "stopping")
            self.source.close()
            self._producer.flush(10)

    def step(self) -> int | None:
        """One batch; returns how many notifications were acknowledged (None when the source is done)."""
        batch = self.source.receive()
        if batch is None:
            return None
        if not batch.notifications:
            return 0
        outputs, problems = self._outputs(batch)
        try:
            self._deliver(outputs + ([batch.checkpoint] if batch.checkpoint else []))
        except NotDeliveredError as exc:
            log.error("%s: Kafka did not take %d notifications (%s)", self.stage, len(batch.notifications), exc)
            self.source.release(batch, str(exc))
            return 0
        self.source.acknowledge(batch, problems)
        metrics.INGESTED.labels(self.stage).inc(len(batch.notifications))
        return len(batch.notifications)

    def _outputs(self, batch: SourceBatch) -> tuple[list[Output], list[str | None]]:
        """Records for every notification of the batch, and per notification the problem that refused it (or None)."""
        outputs: list[Output] = []
        problems: list[str | None] = []
        with self.tracer.start_as_current_span(f"{self.stage} publish"):
            for note in batch.notifications:
                records, problem = self._records(note)
                outputs += records
                problems.append(problem)
        return outputs, problems

    def _records(self, note: Notification) -> tuple[list[Output], str | None]:
        topics = self.settings.topics
        where = f"{self.source.name}:{note.source_id}"
        headers = inject_context({"source": self.source.name, "source-id": note.source_id})
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
        return [Output(topics.s3_events, c.object_id, c.to_body(), headers) for c in changes], None

    def _deliver(self, outputs: Sequence[Output]) -> None:
        if not self.transactional_id:
            deliveries = Deliveries()
            produce_outputs(self._producer, outputs, deliveries)
            try:
                flush_or_raise(self._producer, deliveries)
            except RuntimeError as exc:
                raise NotDeliveredError(str(exc)) from exc
            return
        try:
            self._producer.begin_transaction()
            produce_outputs(self._producer, outputs)
            self._fault_hold()
            self._producer.commit_transaction(60)
        except KafkaException as exc:
            if not exc.args[0].txn_requires_abort():
                raise  # fatal (e.g. fenced by a newer incarnation): stop, the supervisor or the user restarts
            self._producer.abort_transaction(30)
            raise NotDeliveredError(str(exc)) from exc
        self.batches += 1

    def _fault_hold(self) -> None:
        """Fault tests only: once the open transaction's records are on the broker, announce it in
        <state_dir>/hold-<stage>, then wait (to be killed)."""
        hold = self.settings.fault_hold_before_commit_s
        if hold <= 0:
            return
        self._producer.flush(30)
        marker = self.settings.state_dir / f"hold-{self.stage}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.with_suffix(".tmp").write_text(json.dumps({"committed_batches": self.batches}))
        marker.with_suffix(".tmp").replace(marker)  # atomic: a reader never sees a half-written marker
        time.sleep(hold)
