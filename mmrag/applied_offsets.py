"""How far each Faiss shard replica has applied vectors.v1, so a status says "indexed" only once Search finds it.

Each replica says, on the compacted ``vectors.applied.v1`` (key = replica id), which shard it holds, the next
offset of that vectors.v1 partition it will apply (everything before it is in its index) and whether it serves
(caught up, answering requests): at once after each applied batch and every ``interval_s`` besides, and a
tombstone on a clean stop. The index updater follows the topic and holds a batch's statuses until every replica
of each shard the statuses name, serving and heard from within ``max_age_s``, has applied past everything the
updater wrote to that shard's partition (``AppliedOffsets.wait``). A replica that is not serving yet is not
waited for: it turns ready only once it has read its partition to the end offset it saw at start. A replica that
dies without a tombstone (kill -9) holds the statuses of its shard for at most ``max_age_s``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from mmrag.errors import RetryableError
from mmrag.kafka_clients import assign_since, consumer_config
from mmrag.messages import Output, now_ms
from mmrag.producing import Deliveries, produce_outputs
from mmrag.request_reply import FAST_CONSUMER

log = logging.getLogger(__name__)
LOG_EVERY_S = 10.0
EOF_CONSUMER = {"enable.partition.eof": True}


@dataclass(frozen=True)
class AppliedMark:
    """What one replica says: it serves ``shard`` (``ready``) with every record before ``next_offset`` applied."""

    replica: str
    shard: int
    next_offset: int
    ready: bool
    at_ms: int = 0

    def encode(self) -> bytes:
        fields = {"replica": self.replica, "shard": self.shard, "next_offset": self.next_offset}
        return json.dumps({**fields, "ready": self.ready, "at_ms": self.at_ms}, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> AppliedMark:
        """The mark in ``raw``; ValueError when it is not one."""
        try:
            data = json.loads(raw)
            shard, offset = int(data["shard"]), int(data["next_offset"])
            return cls(str(data["replica"]), shard, offset, bool(data["ready"]), int(data["at_ms"]))
        except (AttributeError, KeyError, TypeError) as exc:
            raise ValueError(f"not an applied mark: {raw[:80]!r}") from exc


class AppliedSender:
    """Sends one replica's marks from a thread of its own (so a long index rebuild on the applying thread does not
    silence it): when ``advanced()`` is called and every ``interval_s``. ``position()`` gives (next offset, ready).
    Fire-and-forget: a lost mark is covered by the next one."""

    def __init__(
        self,
        producer: Any,
        topic: str,
        replica: str,
        shard: int,
        position: Callable[[], tuple[int, bool]],
        interval_s: float,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.replica = replica
        self.shard = shard
        self.position = position
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._deliveries = Deliveries()
        self._thread = threading.Thread(target=self._run, name=f"applied-{shard}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def advanced(self) -> None:
        """The replica applied records or turned ready: say so now."""
        self._wake.set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stops sending and leaves the tombstone of a clean stop: the updater stops waiting for this replica."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        produce_outputs(self.producer, [Output(self.topic, self.replica, None)], self._deliveries)
        self.producer.flush(timeout_s)

    def _run(self) -> None:
        said: tuple[int, bool] | None = None
        sent_at = 0.0
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            now = time.monotonic()
            position = self.position()
            if position != said or now - sent_at >= self.interval_s:
                mark = AppliedMark(self.replica, self.shard, position[0], position[1], now_ms())
                produce_outputs(self.producer, [Output(self.topic, self.replica, mark.encode())], self._deliveries)
                said, sent_at = position, now
            self.producer.poll(0)
            if self._deliveries.failures:
                log.warning("applied marks of %s not delivered: %s", self.replica, self._deliveries.failures[:1])
                self._deliveries.failures.clear()


class AppliedOffsets:
    """The replicas' latest marks as one follower thread reads them (every partition assigned from ``max_age_s``
    ago, no group, nothing committed); ``wait`` blocks until the shards' serving replicas applied the targets."""

    def __init__(self, bootstrap: str, topic: str, max_age_s: float, stage: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.max_age_s = max_age_s
        self.stage = stage
        self._marks: dict[str, tuple[AppliedMark, float]] = {}
        self._changed = threading.Condition()
        self._loading: set[int] = set()
        self._consumer: Consumer | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="applied-offsets", daemon=True)

    def start(self) -> None:
        """Assigns the topic from ``max_age_s`` ago; RuntimeError naming the fix when it is missing."""
        consumer = Consumer(
            consumer_config(  # a throwaway group id under the stage's restore prefix: assigned, never committed
                self.bootstrap, f"{self.stage}-restore-applied-{uuid.uuid4().hex[:8]}", **EOF_CONSUMER, **FAST_CONSUMER
            )
        )
        since = now_ms() - int(self.max_age_s * 1000)
        self._loading = assign_since(consumer, self.topic, since, f"{self.stage}: applied offsets")
        self._consumer = consumer
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self._consumer is not None:
            self._consumer.close()

    def behind(self, targets: Mapping[int, int]) -> list[str]:
        """The serving replicas of the shards in ``targets`` (shard -> next offset) that have not applied up to it,
        each as 'replica (shard k at a < b)'; ['loading'] while the follower has not read the topic's end."""
        now = time.monotonic()
        with self._changed:
            if self._loading:
                return ["loading"]
            late = []
            for mark, read_at in self._marks.values():
                target = targets.get(mark.shard)
                fresh = now - read_at <= self.max_age_s
                if target is not None and mark.ready and fresh and mark.next_offset < target:
                    late.append(f"{mark.replica} (shard {mark.shard} at {mark.next_offset} < {target})")
            return late

    def wait(self, targets: Mapping[int, int], timeout_s: float) -> None:
        """Returns once every serving replica of the shards in ``targets`` applied up to its offset; RetryableError
        naming the late replicas after ``timeout_s`` (the batch is redone: its records are idempotent)."""
        began = time.monotonic()
        logged = began
        while late := self.behind(targets):
            now = time.monotonic()
            if now - began > timeout_s:
                raise RetryableError(
                    self.stage,
                    ", ".join(late[:3]),
                    f"Faiss replicas still behind after {timeout_s:.0f}s: statuses held",
                    "check the faiss_worker logs (an index rebuild holds a shard's records; raise "
                    "MMRAG_FAISS_APPLIED_WAIT_S), or stop the stuck replica",
                )
            if now - logged >= LOG_EVERY_S:
                log.info("%s: statuses wait for %s", self.stage, ", ".join(late[:3]))
                logged = now
            with self._changed:
                self._changed.wait(0.05)

    def _follow(self) -> None:
        assert self._consumer is not None
        while not self._stop.is_set():
            try:
                messages = self._consumer.consume(100, 0.25)
            except KafkaException as exc:
                log.warning("%s: applied offsets: %s", self.stage, exc)
                continue
            with self._changed:
                read_at = time.monotonic()
                for msg in messages:
                    self._take(msg, read_at)
                self._marks = {r: seen for r, seen in self._marks.items() if read_at - seen[1] <= 30 * self.max_age_s}
                self._changed.notify_all()

    def _take(self, msg: Message, read_at: float) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                self._loading.discard(int(msg.partition() or 0))
            else:
                log.warning("%s: applied offsets: %s", self.stage, err)
            return
        key, value = msg.key(), msg.value()
        if key is None:
            return
        replica = key.decode(errors="replace")
        if value is None:
            self._marks.pop(replica, None)
            return
        try:
            self._marks[replica] = (AppliedMark.decode(value), read_at)
        except ValueError as exc:
            log.warning("%s: applied mark of %s ignored: %s", self.stage, replica, exc)
