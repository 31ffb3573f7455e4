"""The query service's materialized view for GetObjectStatus: objects.v1, index-status.v1 and dlq.v1, read from the
beginning by one consumer thread (read_committed, every partition assigned, nothing committed, no group joined).

In memory: one small record per object (its newest objects.v1 identity, newest index status, a few dead letters).
Answers are refused until the view has read every partition up to its end as of start-up, so a status is never
"pending" only because the view has not caught up yet.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from google.protobuf.message import DecodeError

from mmrag.dlq import failed_version
from mmrag.kafka_clients import consumer_config, decode_headers, watermark_offsets
from mmrag.messages import now_ms
from mmrag.pb.events_pb2 import IndexStatus
from mmrag.pb.query_pb2 import ObjectStatusResponse
from mmrag.topics import Topics
from query_service.object_status import Failure, ObjectRecord, ObjectSeen, resolve

log = logging.getLogger(__name__)


class StatusView:
    """Follows three topics in a thread; ``status_of`` answers from memory."""

    def __init__(self, bootstrap_servers: str, topics: Topics, instance_id: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        self.group = f"status-view-{instance_id}-{uuid.uuid4().hex[:8]}"  # never joined nor committed
        self._records: dict[str, ObjectRecord] = {}
        self._lock = threading.Lock()
        self._loading: set[tuple[str, int]] = set()
        self._ends: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self.error = ""
        self.read = 0
        self._listeners: list[Callable[[IndexStatus], object]] = []

    def on_index_status(self, listener: Callable[[IndexStatus], object]) -> None:
        """Calls ``listener`` in the view's thread with every IndexStatus it reads, history first (the answer
        cache's invalidation); add listeners before ``start``. A listener's exception is logged, the view goes on."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Assigns every partition of the three topics from the beginning; notes their ends to catch up to."""
        consumer = Consumer(consumer_config(self.bootstrap_servers, self.group, **{"enable.partition.eof": True}))
        names = [self.topics.objects, self.topics.index_status, self.topics.dlq]
        metadata = consumer.list_topics(timeout=30).topics
        missing = [n for n in names if n not in metadata or not metadata[n].partitions]
        if missing:
            consumer.close()
            raise RuntimeError(f"[query_service] status view: topics {missing} missing -> run `mmrag topics`")
        partitions = [TopicPartition(n, p, OFFSET_BEGINNING) for n in names for p in sorted(metadata[n].partitions)]
        for tp in partitions:
            low, high = watermark_offsets(consumer, tp, 30)
            if high > low:
                self._loading.add((tp.topic, tp.partition))
                self._ends[(tp.topic, tp.partition)] = high
        consumer.assign(partitions)
        self._consumer = consumer
        self._thread = threading.Thread(target=self._follow, name="status-view", daemon=True)
        self._thread.start()

    @property
    def caught_up(self) -> bool:
        return not self._loading

    def health(self) -> tuple[bool, str]:
        """For the probes: ok unless the consumer failed; the detail says how far loading got."""
        if self.error:
            return False, f"status view stopped: {self.error}"
        left = len(self._loading)
        return True, f"status view: {self.read} records, {'caught up' if not left else f'{left} partitions loading'}"

    def status_of(self, object_id: str, readers: frozenset[str] | None = None) -> ObjectStatusResponse | None:
        """The object's status for a caller with these reader tokens (None: unrestricted); None when no topic has
        heard of it or the caller may not see it (the two are answered alike: no side channel)."""
        with self._lock:
            record = self._records.get(object_id)
            if record is None or not record.visible_to(readers):
                return None
            return resolve(object_id, record, now_ms())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._consumer is not None:
            self._consumer.close()

    def _follow(self) -> None:
        assert self._consumer is not None
        while not self._stop.is_set():
            try:
                messages = self._consumer.consume(500, 0.5)
            except Exception as exc:  # noqa: BLE001 - reported on the probes instead of killing the thread silently
                self.error = str(exc)
                log.exception("status view: consume failed")
                return
            for msg in messages:
                self._take(msg)

    def _take(self, msg: Message) -> None:
        err = msg.error()
        where = (str(msg.topic()), int(msg.partition() or 0))
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                self._loading.discard(where)
            else:
                log.warning("status view: %s", err)
            return
        self.read += 1
        if int(msg.offset() or 0) + 1 >= self._ends.get(where, 0):
            self._loading.discard(where)
        key = msg.key()
        if key is None:
            return
        object_id = key.decode(errors="replace") if isinstance(key, bytes) else key
        headers = decode_headers(msg.headers())  # type: ignore[arg-type]
        object_id = headers.get("object-id", object_id) if where[0] == self.topics.objects else object_id
        value = msg.value()
        raw = value.encode() if isinstance(value, str) else value
        with self._lock:  # listeners hear of a change before GetObjectStatus can show it: caches drop first
            record = self._records.setdefault(object_id, ObjectRecord())
            status = self._apply(record, where[0], raw, headers, msg)
            if status is not None:
                self._notify(status)

    def _notify(self, status: IndexStatus) -> None:
        for listener in self._listeners:
            try:
                listener(status)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop GetObjectStatus
                log.exception("status view: a listener failed on %s", status.object_id)

    def _apply(
        self, record: ObjectRecord, topic: str, raw: bytes | None, headers: dict[str, str], msg: Message
    ) -> IndexStatus | None:
        """Keeps what ``msg`` says of its object; returns it when it is an index status."""
        written_ms = msg.timestamp()[1]
        if topic == self.topics.objects and headers.get("readers-only"):  # new readers of the version it holds
            if record.seen is not None and record.seen.version == headers.get("version"):
                record.readers = tuple(headers.get("readers", "").split())
        elif topic == self.topics.objects:
            record.seen = ObjectSeen(
                version=headers.get("version", ""),
                live=raw is not None,
                rejected=headers.get("rejected", ""),
                event_time_ms=_int(headers.get("event-time-ms")),
                written_ms=written_ms,
            )
            if "readers" in headers:  # the normalizer's newest decision (tombstones keep it too)
                record.readers = tuple(headers["readers"].split())
        elif topic == self.topics.index_status and raw is not None:
            status = IndexStatus()
            try:
                status.ParseFromString(raw)
            except DecodeError:
                log.warning("status view: undecodable IndexStatus at offset %s", msg.offset())
                return None
            record.status = status
            if record.seen is None:  # objects.v1 not read (yet): the index's readers
                record.readers = tuple(status.readers)
            return status
        elif topic == self.topics.dlq:
            record.add_failure(_failure(raw, headers, int(msg.offset() or 0), written_ms))
        return None


def _failure(raw: bytes | None, headers: Mapping[str, str], offset: int, written_ms: int) -> Failure:
    return Failure(
        version=failed_version(raw, headers),
        stage=headers.get("dlq-stage", ""),
        error_class=headers.get("dlq-error-class", ""),
        message=headers.get("dlq-error-message", ""),
        fix=headers.get("dlq-fix", ""),
        failed_ms=_int(headers.get("dlq-last-failure-ms")) or written_ms,
        offset=offset,
    )


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def answer_status(
    view: StatusView | None, object_id: str, context: Any, readers: frozenset[str] | None
) -> ObjectStatusResponse:
    """GetObjectStatus for a caller with these reader tokens (None: unrestricted): the view's answer, or a gRPC
    error that says what to do (NOT_FOUND, UNAVAILABLE). An object the caller may not see is NOT_FOUND with the
    very words of one never seen."""
    oid = object_id.removeprefix("s3://")
    if not oid or "/" not in oid:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"object_id {object_id!r}: give bucket/key")
    if view is None:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "this query service runs without its status view")
    assert view is not None
    if not view.caught_up:
        context.abort(grpc.StatusCode.UNAVAILABLE, f"status view still loading ({view.read} records read); retry")
    found = view.status_of(oid, readers)
    if found is None:
        context.abort(grpc.StatusCode.NOT_FOUND, f"{oid} not seen on objects.v1, index-status.v1 or dlq.v1")
    assert found is not None
    return found
