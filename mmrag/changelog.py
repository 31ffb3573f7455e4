"""Reading a (compacted) topic's partitions from the start to their end: how a stage restores per-key state.

Reads are `read_committed`, so the end is the last stable offset: records of aborted transactions never count. A
stage's own earlier writes to a partition it now owns are committed before it is assigned the partition (the group
protocol fences the previous owner's open transaction), so reading to the end sees all of them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from mmrag.errors import RetryableError
from mmrag.kafka_clients import consumer_config, decode_headers, watermark_offsets


@dataclass(frozen=True)
class LoggedRecord:
    """One record of a changelog partition, as a stage restoring from it sees it."""

    partition: int
    offset: int
    key: str | None
    value: bytes | None
    headers: dict[str, str]


class ChangelogReader:
    """Partition counts and full reads of topics, with its own short-lived consumer per call."""

    def __init__(self, bootstrap_servers: str, stage: str, timeout_s: float = 120) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.stage = stage
        self.timeout_s = timeout_s

    def _consumer(self) -> Consumer:
        # A throwaway group id: nothing is committed, reads are by explicit assignment.
        group = f"{self.stage}-restore-{uuid.uuid4().hex[:8]}"
        return Consumer(consumer_config(self.bootstrap_servers, group, **{"enable.partition.eof": True}))

    def partition_count(self, topic: str) -> int:
        """Partitions of ``topic``; RetryableError naming the fix when it does not exist or the broker is away."""
        consumer = self._consumer()
        try:
            meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
        finally:
            consumer.close()
        if meta is None or meta.error is not None or not meta.partitions:
            raise RetryableError(
                self.stage, topic, f"topic not available ({meta.error if meta else 'missing'})", "run `mmrag topics`"
            )
        return len(meta.partitions)

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The end offset of each partition of ``topic`` as of now (the next offset a record would get)."""
        count = self.partition_count(topic)
        consumer = self._consumer()
        try:
            return {p: watermark_offsets(consumer, TopicPartition(topic, p), self.timeout_s)[1] for p in range(count)}
        finally:
            consumer.close()

    def read(self, topic: str, partitions: Sequence[int]) -> Iterator[LoggedRecord]:
        """Every committed record of ``partitions`` from the beginning to the end as of now, in offset order."""
        consumer = self._consumer()
        try:
            pending = self._non_empty(consumer, topic, partitions)
            consumer.assign([TopicPartition(topic, p, 0) for p in pending])
            deadline = time.monotonic() + self.timeout_s
            while pending:
                if time.monotonic() > deadline:
                    raise RetryableError(
                        self.stage, topic, f"partitions {sorted(pending)} not read to the end in time", "check Kafka"
                    )
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(int(msg.partition() or 0))
                elif err is not None:
                    raise RetryableError(self.stage, topic, f"read failed: {err}", "check Kafka")
                else:
                    yield _logged(msg)
        finally:
            consumer.close()

    def _non_empty(self, consumer: Consumer, topic: str, partitions: Sequence[int]) -> set[int]:
        """Partitions with anything to read (an empty partition sends no end-of-partition event to wait for)."""
        found = set()
        for p in partitions:
            low, high = watermark_offsets(consumer, TopicPartition(topic, p), 30)
            if high > low:
                found.add(p)
        return found


def _logged(msg: Message) -> LoggedRecord:
    key, value = msg.key(), msg.value()
    return LoggedRecord(
        partition=int(msg.partition() or 0),
        offset=int(msg.offset() or 0),
        key=key.decode(errors="replace") if isinstance(key, bytes) else key,
        value=value.encode() if isinstance(value, str) else value,
        headers=decode_headers(msg.headers()),  # type: ignore[arg-type]
    )
