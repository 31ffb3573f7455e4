"""PollKeeper against the real broker: work that runs paused hands back as soon as it is done, the partitions read
before it resume exactly where they were (sought to their position so they are fetched at once: nothing skipped,
nothing read twice), and a partition rewound during the work resumes at the rewind, not at its old position."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from mmrag import poll_keeper
from mmrag.kafka_clients import consumer_config
from mmrag.poll_keeper import PollKeeper
from tests.kafka_tools import create_topics

pytestmark = pytest.mark.kafka
PARTITIONS = 3


def _topic(bootstrap: str, unique: str, count: int) -> str:
    topic = f"keeper-{unique}"
    create_topics(bootstrap, [topic], PARTITIONS)
    producer = Producer({"bootstrap.servers": bootstrap})
    for n in range(count):
        producer.produce(topic, f"{n}".encode(), key=f"{n}".encode())
    producer.flush(30)
    return topic


def _keeper(bootstrap: str, topic: str, unique: str) -> tuple[Consumer, PollKeeper]:
    consumer = Consumer(consumer_config(bootstrap, f"keeper-{unique}"))
    keeper = PollKeeper(consumer, "test")
    consumer.subscribe([topic], on_assign=lambda c, tps: keeper.on_assign(c, tps, False), on_revoke=keeper.on_revoke)
    return consumer, keeper


def _read(consumer: Consumer, count: int, timeout_s: float = 30) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        got += [m for m in consumer.consume(count - len(got), 0.5) if m.error() is None]
    return got


def _offsets(messages: list[Message]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for m in messages:
        found.setdefault(int(m.partition() or 0), []).append(int(m.offset() or 0))
    return found


def test_paused_work_hands_back_when_done_and_the_partitions_resume_where_they_were(
    bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poll_keeper, "POLL_S", 5.0)  # a poll slice longer than the work: waiting it out shows
    topic = _topic(bootstrap, unique, 600)
    consumer, keeper = _keeper(bootstrap, topic, unique)
    try:
        before = _read(consumer, 100)
        began = time.monotonic()
        assert keeper.run(lambda: time.sleep(0.5) or "done", quiet_s=0.1) == "done"
        assert time.monotonic() - began < 4.0  # not the 5 s poll slice
        after = _read(consumer, 500)
        for partition, offsets in _offsets(before + after).items():
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), partition  # no gap, no repeat
        assert len(before + after) == 600
    finally:
        keeper.close()
        consumer.close()


def test_a_partition_rewound_during_paused_work_resumes_at_the_rewind(bootstrap: str, unique: str) -> None:
    topic = _topic(bootstrap, unique, 300)
    consumer, keeper = _keeper(bootstrap, topic, unique)
    try:
        before = _read(consumer, 60)
        first = min(before, key=lambda m: (m.partition(), m.offset()))
        rewound = TopicPartition(topic, int(first.partition() or 0), int(first.offset() or 0))

        def work() -> None:  # as the runner's back-off does: the batch's partitions go back to its start
            time.sleep(0.3)
            consumer.seek(rewound)

        keeper.run(work, quiet_s=0.05)
        again = [m for m in _read(consumer, 300 - len(before) + 10, timeout_s=10) if m.partition() == rewound.partition]
        assert again and int(again[0].offset() or 0) == rewound.offset  # read again from the rewind, not after it
    finally:
        keeper.close()
        consumer.close()
