"""The query side of request-reply: one consumer per replica reads this replica's reply partition of every reply
topic (assigned, not group-managed) and hands each reply to its request's queue.

Search collects a reply per shard, generation reads a stream of chunks: both wait on a per-request queue until
their own condition or deadline. Late replies (their request already returned) are counted and dropped; a reply
that cannot be decoded is counted and reported in readiness; neither stops the reader thread."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from google.protobuf.message import DecodeError, Message
from prometheus_client import Counter

from mmrag.kafka_clients import consumer_config, decode_headers, watermark_offsets
from mmrag.messages import Output
from mmrag.producing import produce_outputs
from mmrag.request_reply import CORRELATION_ID, FAST_CONSUMER, ReplyAddress
from mmrag.telemetry import inject_context

log = logging.getLogger(__name__)
LATE = Counter("mmrag_late_replies_total", "Replies that arrived after their request returned (dropped)", ["topic"])
UNDECODABLE = Counter("mmrag_reply_decode_errors_total", "Replies that could not be decoded (dropped)", ["topic"])


class PendingReplies:
    """The replies of one request, in arrival order."""

    def __init__(self, correlation_id: str) -> None:
        self.correlation_id = correlation_id
        self._queue: queue.SimpleQueue[Message] = queue.SimpleQueue()

    def put(self, reply: Message) -> None:
        self._queue.put(reply)

    def next(self, deadline: float) -> Message | None:
        """The next reply, or None once the monotonic ``deadline`` passed without one."""
        try:
            return self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None


class RequestReplyClient:
    """``reply_types`` maps each reply topic to its protobuf message class; this replica owns ``partition`` of each."""

    def __init__(self, bootstrap: str, reply_types: Mapping[str, type[Message]], partition: int, instance: str) -> None:
        self.reply_types = dict(reply_types)
        self.partition = partition
        # group.id is required by librdkafka even for assign(); nothing is ever committed under it.
        self._config = consumer_config(bootstrap, f"query-replies-{instance}", **FAST_CONSUMER)
        self._pending: dict[str, PendingReplies] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self.decode_errors = 0
        self.last_error = ""

    def start(self) -> None:
        """Assigns each reply partition at its current end (resolved now, so no reply sent after start is missed)."""
        self._consumer = Consumer(self._config)
        assignment = []
        for topic in self.reply_types:
            _, high = watermark_offsets(self._consumer, TopicPartition(topic, self.partition), 15)
            assignment.append(TopicPartition(topic, self.partition, high))
        self._consumer.assign(assignment)
        self._thread = threading.Thread(target=self._loop, name="reply-client", daemon=True)
        self._thread.start()

    @contextmanager
    def expect(self, correlation_id: str) -> Iterator[PendingReplies]:
        """Registers a request's queue before the request is sent; replies after the block are late."""
        pending = PendingReplies(correlation_id)
        with self._lock:
            self._pending[correlation_id] = pending
        try:
            yield pending
        finally:
            with self._lock:
                self._pending.pop(correlation_id, None)

    def health(self) -> tuple[bool, str]:
        """Whether the reader runs, with the decode errors seen (readiness detail)."""
        alive = self._thread is not None and self._thread.is_alive()
        detail = f"reply reader {'running' if alive else 'STOPPED'}, {self.decode_errors} undecodable replies"
        return alive, detail + (f" (last: {self.last_error})" if self.last_error else "")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self._consumer.poll(0.05)
                if msg is None:
                    continue
                if msg.error():
                    log.warning("reply client: %s", msg.error())
                    continue
                self._dispatch(str(msg.topic()), decode_headers(msg.headers()), msg.value())
            except Exception as exc:  # the reader must outlive any one bad reply or client hiccup
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("reply client: a reply could not be handled; reading on")

    def _dispatch(self, topic: str, headers: Mapping[str, str], raw: bytes | None) -> None:
        with self._lock:
            pending = self._pending.get(headers.get(CORRELATION_ID, ""))
        if pending is None or raw is None:
            LATE.labels(topic).inc()
            return
        cls = self.reply_types[topic]
        schema = headers.get("schema")
        try:
            if schema and schema != cls.DESCRIPTOR.full_name:
                raise DecodeError(f"schema header {schema!r}, expected {cls.DESCRIPTOR.full_name}")
            reply = cls()
            reply.ParseFromString(raw)
        except DecodeError as exc:
            UNDECODABLE.labels(topic).inc()
            self.decode_errors += 1
            self.last_error = f"{topic}: {exc}"
            log.warning("reply client: undecodable reply on %s for %s: %s", topic, pending.correlation_id, exc)
            return
        pending.put(reply)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._consumer is not None:
            self._consumer.close()


@dataclass(frozen=True)
class Route:
    """Where requests of one kind go and where their replies come back (this replica's partition)."""

    producer: Any
    requests_topic: str
    replies_topic: str
    replies: RequestReplyClient

    @contextmanager
    def send(self, correlation_id: str, request: Message, deadline_ms: int) -> Iterator[PendingReplies]:
        """Registers the request's queue, then sends the request with its reply address and trace context."""
        address = ReplyAddress(correlation_id, self.replies_topic, self.replies.partition, deadline_ms)
        with self.replies.expect(correlation_id) as pending:
            output = Output(self.requests_topic, correlation_id, request, inject_context(address.headers()))
            produce_outputs(self.producer, [output])
            self.producer.poll(0)
            yield pending
