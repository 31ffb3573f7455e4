"""S3 -> SQS notifications -> objects.v1. An SQS message is deleted only after Kafka acknowledged its events."""

from __future__ import annotations

import logging
import threading
from typing import Any

from pydantic import Field

from mmrag import metrics
from mmrag.dlq import Origin, dead_letter
from mmrag.errors import PermanentError
from mmrag.kafka_clients import make_producer
from mmrag.messages import Output
from mmrag.object_store import s3_client
from mmrag.producing import Deliveries, flush_or_raise, produce_outputs
from mmrag.settings import BaseServiceSettings, S3Settings
from mmrag.telemetry import Probes
from producers.s3_events import change_output, parse_notification, unsupported_error

log = logging.getLogger(__name__)
STAGE = "sqs_bridge"


class SqsBridgeSettings(BaseServiceSettings, S3Settings):
    sqs_queue_url: str = Field(default="", description="the queue the bucket notifications go to")
    sqs_wait_s: int = 1
    sqs_batch: int = 10


def outputs_for_message(body: str, message_id: str, settings: BaseServiceSettings) -> list[Output]:
    """The objects.v1 records (or DLQ records) one SQS message turns into."""
    topics = settings.topics
    origin = Origin(f"sqs:{message_id}")
    try:
        changes = parse_notification(body, f"sqs message {message_id}")
    except PermanentError as exc:
        return [dead_letter(topics.dlq, message_id, body.encode(), {}, stage=STAGE, error=exc, origin=origin)]
    outputs = []
    for change in changes:
        error = None if change.deleted else unsupported_error(change.event)
        record = change_output(change, topics.objects)
        if error is not None:
            record = dead_letter(
                topics.dlq,
                record.key,
                change.event.SerializeToString(),
                record.headers,
                stage=STAGE,
                error=error,
                origin=origin,
            )
        outputs.append(record)
    if not changes:
        log.info("sqs message %s carried no records (s3:TestEvent); acknowledged", message_id)
    return outputs


class SqsBridge:
    """Long-polls the queue, produces each message's events, acknowledges after delivery."""

    def __init__(self, settings: SqsBridgeSettings, probes: Probes | None = None) -> None:
        self.settings = settings
        self.probes = probes or Probes(STAGE)
        self._sqs: Any = None
        self._producer: Any = None

    def start(self) -> None:
        if not self.settings.sqs_queue_url:
            raise ValueError("MMRAG_SQS_QUEUE_URL is empty -> set it to the queue that receives bucket notifications")
        self._sqs = s3_client(self.settings, "sqs")
        self._producer = make_producer(self.settings.bootstrap_servers)
        self.probes.set_ready(True)

    def run(self, stop: threading.Event) -> None:
        self.start()
        while not stop.is_set():
            self.step()
        self._producer.flush(10)

    def step(self) -> int:
        """One receive -> produce -> flush -> delete round; returns the number of SQS messages acknowledged."""
        s = self.settings
        reply = self._sqs.receive_message(
            QueueUrl=s.sqs_queue_url, MaxNumberOfMessages=s.sqs_batch, WaitTimeSeconds=s.sqs_wait_s
        )
        messages = reply.get("Messages", [])
        if not messages:
            return 0
        deliveries = Deliveries()
        for msg in messages:
            produce_outputs(self._producer, outputs_for_message(msg["Body"], msg["MessageId"], s), deliveries)
        try:
            flush_or_raise(self._producer, deliveries)
        except RuntimeError as exc:
            # Not acknowledged: SQS redelivers after the visibility timeout; downstream dedups by version.
            log.error("%s: Kafka did not take the events (%s); leaving %d SQS messages", STAGE, exc, len(messages))
            return 0
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        self._sqs.delete_message_batch(QueueUrl=s.sqs_queue_url, Entries=entries)
        metrics.INGESTED.labels(STAGE).inc(len(messages))
        return len(messages)


def main(argv: list[str] | None = None) -> int:
    from mmrag.service import service_main

    return service_main(STAGE, SqsBridgeSettings, SqsBridge, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
