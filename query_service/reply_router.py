"""ReplyRouter: owns one reply partition (assigned, not group-managed) and hands replies to waiting requests."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from mmrag.kafka_clients import consumer_config, decode_headers
from mmrag.pb.events_pb2 import SearchReply
from mmrag.request_reply import CORRELATION_ID, FAST_CONSUMER

log = logging.getLogger(__name__)


@dataclass
class Pending:
    expected: int
    replies: list[SearchReply] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


class ReplyRouter:
    """A background thread reads the reply partition from its end and completes pending requests."""

    def __init__(self, bootstrap: str, topic: str, partition: int, instance: str) -> None:
        self.topic = topic
        self.partition = partition
        # group.id is required by librdkafka even for assign(); nothing is ever committed under it.
        self._config = consumer_config(bootstrap, f"query-replies-{instance}", **FAST_CONSUMER)
        self._pending: dict[str, Pending] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None

    def start(self) -> None:
        """Assigns the partition at its current end (resolved now, so no reply sent after start is missed)."""
        self._consumer = Consumer(self._config)
        tp = TopicPartition(self.topic, self.partition)
        _, high = self._consumer.get_watermark_offsets(tp, timeout=15)
        self._consumer.assign([TopicPartition(self.topic, self.partition, high)])
        self._thread = threading.Thread(target=self._loop, name="reply-router", daemon=True)
        self._thread.start()

    def expect(self, correlation_id: str, replies: int) -> Pending:
        pending = Pending(replies)
        with self._lock:
            self._pending[correlation_id] = pending
        return pending

    def wait(self, correlation_id: str, pending: Pending, deadline: float) -> list[SearchReply]:
        """Waits until all expected replies arrived or the monotonic ``deadline``; returns what arrived."""
        pending.done.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._pending.pop(correlation_id, None)
            return list(pending.replies)

    def _loop(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.05)
            if msg is None:
                continue
            if msg.error():
                log.warning("reply router: %s", msg.error())
                continue
            self._dispatch(decode_headers(msg.headers()).get(CORRELATION_ID, ""), msg.value())

    def _dispatch(self, correlation_id: str, raw: bytes | None) -> None:
        with self._lock:
            pending = self._pending.get(correlation_id)
            if pending is None or raw is None:
                return  # late reply of a request that already returned
            reply = SearchReply()
            reply.ParseFromString(raw)
            pending.replies.append(reply)
            if len(pending.replies) >= pending.expected:
                pending.done.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._consumer is not None:
            self._consumer.close()
