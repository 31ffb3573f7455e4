"""When a query last returned each object, for TTL by not-accessed (part of the TTL pruning job).

Nothing is added to the query path: every shard's answer already goes over search.replies.v1, with the object id
of each hit and the time the worker answered (the record's timestamp). The job folds the replies since its last run
(offsets committed under group ``ttl-access``) into one record per object, its newest hit, on the compacted
object-access.v1 (key object_id, value ``{"last_access_ms": N}``), flushes them, and only then commits the offsets:
a run that died in between is folded again, and a fold takes the newest time, so a repeat changes nothing.
A shard's hits are its top-k candidates, a superset of what the query service finally returns: counting them as
accesses can only keep an object longer, never expire one a query returned.

Where replies were lost before they were folded (retention deleted them: the committed offset is below the log start,
or nothing was ever committed on a truncated log), accesses are unknown: the job writes ``#since`` = now and no object
counts as unaccessed before M days after that.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_INVALID, Consumer, Producer, TopicPartition

from mmrag.changelog import ChangelogReader
from mmrag.errors import RetryableError
from mmrag.kafka_clients import consumer_config, producer_config, watermark_offsets
from mmrag.pb.events_pb2 import SearchReply

log = logging.getLogger(__name__)
STAGE = "ttl_pruning"
ACCESS_GROUP = "ttl-access"
SINCE_KEY = "#since"  # never an object id: those are bucket/key, and bucket names have no '#'


@dataclass
class Accesses:
    """Per object the newest time a query returned it (epoch ms), and since when that record is complete."""

    last: dict[str, int] = field(default_factory=dict)
    since_ms: int = 0  # 0: complete from the start

    def add(self, object_id: str, at_ms: int) -> None:
        if at_ms > self.last.get(object_id, 0):
            self.last[object_id] = at_ms

    def merge(self, other: Accesses) -> Accesses:
        merged = Accesses(dict(self.last), max(self.since_ms, other.since_ms))
        for oid, at in other.last.items():
            merged.add(oid, at)
        return merged


def start_offset(committed: int, low: int) -> tuple[int, bool]:
    """Where a fold of one reply partition starts, and whether replies were lost before it (see the module doc)."""
    if committed < 0:  # never folded: the whole partition, lost only if retention already truncated it
        return low, low > 0
    return max(committed, low), committed < low


def replied_objects(value: bytes | None) -> set[str]:
    """The object ids of a shard's hits; an error reply or an undecodable record returned nothing."""
    reply = SearchReply()
    try:
        reply.ParseFromString(value or b"")
    except Exception:  # noqa: BLE001 - a foreign record on the topic is no access, and the fold goes on
        return set()
    return set() if reply.error else {hit.object_id for hit in reply.hits if hit.object_id}


def read_accesses(bootstrap: str, topic: str) -> Accesses:
    """Everything object-access.v1 holds, folded (the newest time per object, the latest ``#since``)."""
    reader = ChangelogReader(bootstrap, STAGE)
    found = Accesses()
    for record in reader.read(topic, range(reader.partition_count(topic))):
        if record.key is None or record.value is None:
            continue
        at = int(json.loads(record.value)["last_access_ms"])
        if record.key == SINCE_KEY:
            found.since_ms = max(found.since_ms, at)
        else:
            found.add(record.key, at)
    return found


class ReplyFold:
    """One run's fold of search.replies.v1 into object-access.v1."""

    def __init__(self, bootstrap: str, replies_topic: str, access_topic: str, group: str = ACCESS_GROUP) -> None:
        self.bootstrap = bootstrap
        self.replies_topic = replies_topic
        self.access_topic = access_topic
        self.consumer = Consumer(consumer_config(bootstrap, group, **{"isolation.level": "read_uncommitted"}))

    def fold(self, now_ms: int, timeout_s: float = 120) -> tuple[Accesses, list[TopicPartition]]:
        """The accesses in the replies since the last committed fold, and the offsets to commit once they are
        written. RetryableError when Kafka does not answer or the replies cannot be read to their end in time."""
        found, ends = Accesses(), []
        for tp in self._partitions():
            low, high = watermark_offsets(self.consumer, tp, 30)
            (committed,) = self.consumer.committed([tp], timeout=30)
            start, lost = start_offset(committed.offset if committed.offset != OFFSET_INVALID else -1, low)
            if lost:
                log.warning("%s: replies of %s lost before they were folded", STAGE, tp)
                found.since_ms = now_ms
            if high > start:
                self._read(TopicPartition(tp.topic, tp.partition, start), high, found, timeout_s)
            ends.append(TopicPartition(tp.topic, tp.partition, high))
        return found, ends

    def _partitions(self) -> list[TopicPartition]:
        meta = self.consumer.list_topics(self.replies_topic, timeout=30).topics.get(self.replies_topic)
        if meta is None or meta.error is not None:
            raise RetryableError(STAGE, self.replies_topic, "topic not available", "run `mmrag topics`, check Kafka")
        return [TopicPartition(self.replies_topic, p) for p in sorted(meta.partitions)]

    def _read(self, tp: TopicPartition, end: int, found: Accesses, timeout_s: float) -> None:
        """Adds the hits of ``tp`` from its offset to ``end``; the position counts transaction markers too."""
        self.consumer.assign([tp])
        deadline = time.monotonic() + timeout_s
        while self.consumer.position([tp])[0].offset < end:
            if time.monotonic() > deadline:
                raise RetryableError(STAGE, str(tp), f"replies not read to offset {end} in time", "check Kafka")
            msg = self.consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                raise RetryableError(STAGE, str(tp), f"read failed: {msg.error()}", "check Kafka")
            for oid in replied_objects(msg.value()):
                found.add(oid, msg.timestamp()[1])

    def write(self, found: Accesses, ends: list[TopicPartition]) -> None:
        """Writes the fold (flushed; RetryableError when Kafka refused any record), then commits ``ends``."""
        records = dict(found.last)
        if found.since_ms:
            records[SINCE_KEY] = found.since_ms
        producer = Producer(producer_config(self.bootstrap))
        failures: list[str] = []

        def delivered(err: object, _msg: object) -> None:
            if err is not None:
                failures.append(str(err))

        for oid, at in records.items():
            producer.produce(self.access_topic, json.dumps({"last_access_ms": at}).encode(), oid, on_delivery=delivered)
        left = producer.flush(30)
        if left or failures:
            raise RetryableError(
                STAGE, self.access_topic, f"{left} access records undelivered, errors {failures[:3]}", "run again"
            )
        if ends:
            self.consumer.commit(offsets=ends, asynchronous=False)

    def close(self) -> None:
        self.consumer.close()
