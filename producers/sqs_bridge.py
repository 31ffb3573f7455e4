"""S3 -> SQS notifications -> s3-events.v1. An SQS message is deleted only after Kafka acknowledged its records.

Bodies may be S3 notifications, SNS-wrapped ones or EventBridge events (an EventBridge rule targeting the queue);
the normalizer turns the published changes into objects.v1.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from mmrag.errors import RetryableError
from mmrag.object_store import s3_client
from mmrag.service import service_main
from mmrag.settings import BaseServiceSettings, S3Settings
from mmrag.telemetry import Probes
from producers.event_source import Notification, SourceBatch
from producers.publisher import ChangePublisher

log = logging.getLogger(__name__)
STAGE = "sqs_bridge"


class SqsBridgeSettings(BaseServiceSettings, S3Settings):
    sqs_queue_url: str = Field(default="", description="the queue the bucket notifications go to")
    sqs_wait_s: int = Field(default=1, ge=0, le=20, description="long-poll wait per receive")
    sqs_batch: int = Field(default=10, ge=1, le=10, description="messages per receive (SQS allows 10)")


class SqsSource:
    """The EventSource over one SQS queue: long-poll, then delete what Kafka acknowledged."""

    name = "sqs"

    def __init__(self, settings: SqsBridgeSettings) -> None:
        self.settings = settings
        self._sqs: Any = None

    def start(self) -> None:
        if not self.settings.sqs_queue_url:
            raise ValueError("MMRAG_SQS_QUEUE_URL is empty -> set it to the queue that receives bucket notifications")
        self._sqs = s3_client(self.settings, "sqs")

    def receive(self) -> SourceBatch:
        """The next messages; RetryableError while SQS cannot be reached or refuses (the publisher backs off)."""
        from botocore.exceptions import BotoCoreError, ClientError

        s = self.settings
        try:
            reply = self._sqs.receive_message(
                QueueUrl=s.sqs_queue_url, MaxNumberOfMessages=s.sqs_batch, WaitTimeSeconds=s.sqs_wait_s
            )
        except (BotoCoreError, ClientError) as exc:
            raise RetryableError(
                STAGE,
                s.sqs_queue_url,
                f"cannot receive from SQS: {exc}",
                "check SQS (MMRAG_S3_ENDPOINT_URL) and access",
            ) from exc
        return SourceBatch(
            [Notification(m["Body"].encode(), m["MessageId"], m["ReceiptHandle"]) for m in reply.get("Messages", [])]
        )

    def acknowledge(self, batch: SourceBatch, problems: Sequence[str | None]) -> None:
        """Deletes the messages: Kafka holds their records, or the DLQ holds the refused ones."""
        from botocore.exceptions import BotoCoreError, ClientError

        entries = [{"Id": str(i), "ReceiptHandle": n.handle} for i, n in enumerate(batch.notifications)]
        try:
            reply = self._sqs.delete_message_batch(QueueUrl=self.settings.sqs_queue_url, Entries=entries)
        except (BotoCoreError, ClientError) as exc:  # Kafka holds them: a redelivery is a duplicate, dropped later
            log.warning("%s: could not delete %d SQS messages (%s); redelivered later", STAGE, len(entries), exc)
            return
        for failed in reply.get("Failed", []):
            # Redelivered after the visibility timeout; the normalizer drops the duplicate.
            log.warning("%s: SQS did not delete message %s: %s", STAGE, failed.get("Id"), failed.get("Message"))

    def release(self, batch: SourceBatch, reason: str) -> None:
        count = len(batch.notifications)
        log.warning("%s: %d messages stay in SQS, redelivered after the visibility timeout (%s)", STAGE, count, reason)

    def close(self) -> None:
        """Nothing to close: boto3 clients hold no resources worth releasing."""


def build(settings: SqsBridgeSettings, probes: Probes) -> ChangePublisher:
    return ChangePublisher(settings, SqsSource(settings), STAGE, probes)


def main(argv: list[str] | None = None) -> int:
    return service_main(STAGE, SqsBridgeSettings, build, argv)


if __name__ == "__main__":
    sys.exit(main())
