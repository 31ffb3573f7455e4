"""Test helpers that make ad-hoc topics and read what landed on a topic (real broker, throwaway consumer groups)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from mmrag.kafka_clients import decode_headers
from mmrag.kafka_security import kafka_security


@dataclass(frozen=True)
class Landed:
    key: str | None
    value: bytes | None
    headers: dict[str, str]
    partition: int
    offset: int
    timestamp_ms: int = 0  # the record's timestamp (CreateTime: when its producer made it)


def create_topics(
    bootstrap: str, names: list[str], partitions: int, replication: int = 1, config: dict[str, str] | None = None
) -> None:
    """Creates a test's own topics (``mmrag.topics.ensure_topics`` makes the project's) and waits for them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept until the futures are done: they fail without it
    new = [NewTopic(n, num_partitions=partitions, replication_factor=replication, config=config or {}) for n in names]
    for future in admin.create_topics(new, operation_timeout=30).values():
        future.result(timeout=60)


def read_topic(bootstrap: str, topic: str, *, idle_s: float = 2.0, committed_only: bool = True) -> list[Landed]:
    """Everything on ``topic`` from the start, until nothing new arrived for ``idle_s``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            **kafka_security(bootstrap),  # the test process's identity on a secured broker (its admin)
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if committed_only else "read_uncommitted",
        }
    )
    consumer.subscribe([topic])
    found: list[Landed] = []
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            last = time.monotonic()
            key = msg.key()
            found.append(
                Landed(
                    key.decode() if key is not None else None,
                    msg.value(),
                    decode_headers(msg.headers()),
                    msg.partition(),
                    msg.offset(),
                )
            )
    finally:
        consumer.close()
    return found


def wait_for(check, timeout_s: float, what: str, interval_s: float = 0.5):  # type: ignore[no-untyped-def]
    """Polls ``check`` until it returns something truthy; fails the test naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last value: {last!r}")
