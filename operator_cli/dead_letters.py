"""Reading dead letters (dlq.v1) and the replay markers: parsed records, filters, a readable value preview."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from google.protobuf import descriptor_pool, json_format, message_factory

import mmrag.pb.events_pb2  # noqa: F401 - registers the payload types the preview decodes by name
from mmrag.dlq import DLQ_PREFIX, REPLAY_FIRST_FAILURE_MS, REPLAY_OF, REPLAY_PRIOR_ATTEMPTS, failed_version
from mmrag.kafka_clients import consumer_config, decode_headers, watermark_offsets
from operator_cli.connection import CommandError

READ_TIMEOUT_S = 60.0
_REPLAY_HEADERS = {REPLAY_OF, REPLAY_PRIOR_ATTEMPTS, REPLAY_FIRST_FAILURE_MS}


@dataclass(frozen=True)
class Record:
    """One committed Kafka record."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    value: bytes | None
    headers: dict[str, str]


@dataclass(frozen=True)
class DeadLetter:
    """A dlq.v1 record with its DLQ headers named."""

    record: Record

    def _h(self, name: str) -> str:
        return self.record.headers.get(DLQ_PREFIX + name, "")

    @property
    def offset(self) -> int:
        return self.record.offset

    @property
    def ref(self) -> str:
        """How the replay markers name it: ``partition:offset`` of dlq.v1."""
        return f"{self.record.partition}:{self.record.offset}"

    @property
    def stage(self) -> str:
        return self._h("stage")

    @property
    def error_class(self) -> str:
        return self._h("error-class")

    @property
    def message(self) -> str:
        return self._h("error-message")

    @property
    def fix(self) -> str:
        return self._h("fix")

    @property
    def attempts(self) -> int:
        return _int(self._h("attempts"))

    @property
    def failed_ms(self) -> int:
        return _int(self._h("last-failure-ms")) or self.record.timestamp_ms

    @property
    def first_failure_ms(self) -> int:
        return _int(self._h("first-failure-ms")) or self.failed_ms

    @property
    def source_topic(self) -> str:
        return self._h("source-topic")

    @property
    def source_partition(self) -> int | None:
        text = self._h("source-partition")
        return int(text) if text.isdigit() else None

    @property
    def replay_of(self) -> str:
        """The dead letter this record's input was replayed from ('' when it is a first failure)."""
        return self.record.headers.get(REPLAY_OF, "")

    @property
    def version(self) -> str | None:
        return failed_version(self.record.value, self.record.headers)

    def original_headers(self) -> dict[str, str]:
        """The failed input's own headers, without the DLQ's and an earlier replay's."""
        return {
            k: v for k, v in self.record.headers.items() if not k.startswith(DLQ_PREFIX) and k not in _REPLAY_HEADERS
        }


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command means; empty fields select everything."""

    stage: str | None = None
    error_class: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    first_offset: int | None = None
    last_offset: int | None = None
    key: str | None = None

    @property
    def by_offsets(self) -> bool:
        return self.first_offset is not None

    def matches(self, d: DeadLetter) -> bool:
        checks = (
            self.stage is None or d.stage == self.stage,
            self.error_class is None or d.error_class == self.error_class,
            self.since_ms is None or d.failed_ms >= self.since_ms,
            self.until_ms is None or d.failed_ms < self.until_ms,
            self.first_offset is None or d.offset >= self.first_offset,
            self.last_offset is None or d.offset <= self.last_offset,
            self.key is None or self.key in (d.record.key or ""),
        )
        return all(checks)


def parse_offsets(text: str) -> tuple[int, int]:
    """``N`` or ``A-B`` (inclusive)."""
    first, _, last = text.partition("-")
    try:
        return int(first), int(last or first)
    except ValueError as exc:
        raise CommandError(f"--offsets {text!r}: give N or A-B (inclusive), as `mmrag dlq list` shows them") from exc


def read_records(
    bootstrap: str, topic: str, partitions: Sequence[int] | None = None, start: int = 0, limit: int | None = None
) -> Iterator[Record]:
    """Committed records of ``topic`` (all partitions, or those given) from ``start`` (or the earliest kept) to the
    end as of now. CommandError when the topic does not exist or is not read in READ_TIMEOUT_S."""
    consumer = Consumer(
        consumer_config(bootstrap, f"mmrag-read-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True})
    )
    try:
        meta = consumer.list_topics(topic, timeout=15).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise CommandError(f"topic {topic} not found -> check MMRAG_TOPIC_PREFIX, or create it (`mmrag topics`)")
        pending = {}
        for p in partitions if partitions is not None else sorted(meta.partitions):
            low, high = watermark_offsets(consumer, TopicPartition(topic, p), 15)
            if high > max(low, start):
                pending[p] = high
        yield from _drain(consumer, topic, pending, start, limit)
    finally:
        consumer.close()


def _drain(consumer: Consumer, topic: str, ends: dict[int, int], start: int, limit: int | None) -> Iterator[Record]:
    consumer.assign([TopicPartition(topic, p, start) for p in ends])
    deadline = time.monotonic() + READ_TIMEOUT_S
    given = 0
    while ends and (limit is None or given < limit):
        if time.monotonic() > deadline:
            raise CommandError(f"{topic}: partitions {sorted(ends)} not read to their end in {READ_TIMEOUT_S:.0f}s")
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        partition = int(msg.partition() or 0)
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                ends.pop(partition, None)
            continue
        offset = int(msg.offset() or 0)
        if offset + 1 >= ends.get(partition, 0):
            ends.pop(partition, None)
        given += 1
        yield _record(topic, partition, offset, msg)


def _record(topic: str, partition: int, offset: int, msg: Any) -> Record:
    key, value = msg.key(), msg.value()
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=msg.timestamp()[1],
        key=key.decode(errors="replace") if isinstance(key, bytes) else key,
        value=value.encode() if isinstance(value, str) else value,
        headers=decode_headers(msg.headers()),
    )


def read_dead_letters(
    bootstrap: str, dlq_topic: str, selection: Selection, stages: set[str] | None = None
) -> list[DeadLetter]:
    """The dead letters ``selection`` means; ``stages`` (when given) gets the stage of every one read."""
    start = selection.first_offset or 0
    found = []
    for record in read_records(bootstrap, dlq_topic, start=start):
        d = DeadLetter(record)
        if stages is not None:
            stages.add(d.stage)
        if selection.matches(d):
            found.append(d)
    return found


def dead_letter_at(bootstrap: str, dlq_topic: str, offset: int, partition: int = 0) -> DeadLetter:
    for record in read_records(bootstrap, dlq_topic, [partition], start=offset, limit=1):
        if record.offset == offset:
            return DeadLetter(record)
    raise CommandError(f"no dead letter at {dlq_topic}[{partition}]@{offset} -> `mmrag dlq list` shows the offsets")


def preview(value: bytes | None, schema: str, limit: int = 2000) -> str:
    """The failed input readably: a protobuf by its schema header (long vectors summarized), text, or hex."""
    if value is None:
        return "(tombstone: no value)"
    if schema:
        try:
            cls = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(schema))
            message = cls()
            message.ParseFromString(value)
            return str(_shorten(json_format.MessageToDict(message)))[:limit]
        except Exception:  # noqa: BLE001 - an unknown or broken payload is shown as bytes instead
            pass
    try:
        return value.decode("utf-8")[:limit]
    except UnicodeDecodeError:
        return f"{len(value)} bytes: {value[:64].hex(' ')}{' ...' if len(value) > 64 else ''}"


def _shorten(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _shorten(v) for k, v in data.items()}
    if isinstance(data, list):
        if len(data) > 8 and all(isinstance(x, int | float) for x in data):
            return f"<{len(data)} numbers>"
        return [_shorten(x) for x in data]
    return data


def _int(text: str) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0
