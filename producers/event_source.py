"""The EventSource port: where raw S3 change notifications come from (SQS, the webhook, a bucket listing).

A source hands out batches of notification bodies and learns their fate: ``acknowledge`` once Kafka durably holds
what they turned into (a refused body names its problem: it went to the DLQ), ``release`` when Kafka did not take
them (the source redelivers: SQS after the visibility timeout, a webhook client on its 5xx, backfill from its last
checkpoint). The publisher (producers.publisher) does the rest, the same for every source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mmrag.messages import Output


@dataclass(frozen=True)
class Notification:
    """One notification body as the source received it; ``handle`` is the source's own (receipt, reply slot)."""

    body: bytes
    source_id: str
    handle: Any = None


@dataclass(frozen=True)
class SourceBatch:
    """Notifications to publish together; ``checkpoint`` is a record committed atomically with them (backfill)."""

    notifications: Sequence[Notification] = ()
    checkpoint: Output | None = None


class EventSource(Protocol):
    name: str  # the `source` header on s3-events.v1 and ObjectEvent.source: sqs, webhook, backfill

    def start(self) -> None: ...

    def receive(self) -> SourceBatch | None:
        """The next batch (empty when nothing arrived in the source's wait), or None when a finite source is done."""
        ...

    def acknowledge(self, batch: SourceBatch, problems: Sequence[str | None]) -> None: ...

    def release(self, batch: SourceBatch, reason: str) -> None: ...

    def close(self) -> None: ...
