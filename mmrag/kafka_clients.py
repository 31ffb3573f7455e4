"""confluent-kafka client configs with the delivery guarantees of docs/architecture.md."""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from mmrag.kafka_security import kafka_security

# Errors of a partition whose leader is being elected or moving: a topic created a moment ago, a broker failover.
_LEADER_MOVING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
}

# How often every client asks for the metadata of the topics it uses. librdkafka refreshes it once when a broker
# connection drops, while the dead broker is still the leader (until the controller fences it, ~3 s with the local
# cluster's broker.session.timeout.ms), and then not again until something else asks (its default interval is 5
# minutes): produce and fetch of the dead broker's partitions waited 5-15 s in the 3-broker kill drill. A refresh a
# second finds the new leaders within a second of the election; it is one small request per client.
METADATA_REFRESH_MS = 1000


def consumer_config(bootstrap: str, group: str, **extra: Any) -> dict[str, Any]:
    """Manual commits, read_committed (never see aborted transactions), start from the earliest offset."""
    return {
        "bootstrap.servers": bootstrap,
        **kafka_security(bootstrap),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 300000,
        "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
        **extra,
    }


def producer_config(bootstrap: str, transactional_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """Idempotent, acks=all; transactional when given a stable transactional.id (one per replica)."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        **kafka_security(bootstrap),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
        **extra,
    }
    if transactional_id:
        config["transactional.id"] = transactional_id
    return config


def admin_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """An AdminClient's config: the bootstrap servers and this process's Kafka security settings."""
    return {"bootstrap.servers": bootstrap, **kafka_security(bootstrap), **extra}


def make_consumer(bootstrap: str, group: str, **extra: Any) -> Consumer:
    return Consumer(consumer_config(bootstrap, group, **extra))


def make_producer(bootstrap: str, transactional_id: str | None = None, **extra: Any) -> Producer:
    return Producer(producer_config(bootstrap, transactional_id, **extra))


def encode_headers(headers: Mapping[str, str]) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in headers.items()]


def decode_headers(raw: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Kafka headers as a str dict (last value wins; None values become empty strings)."""
    return {k: (v or b"").decode(errors="replace") for k, v in (raw or [])}


def key_partition(key: str, partitions: int) -> int:
    """The partition librdkafka's default partitioner gives a non-empty key (CRC-32 mod count). Stages that keep
    per-key state write with it explicitly, so an input partition and the same output partition hold the same keys."""
    return zlib.crc32(key.encode()) % partitions


def _leader_moving(exc: BaseException) -> bool:
    return isinstance(exc, KafkaException) and exc.args[0].code() in _LEADER_MOVING


def watermark_offsets(consumer: Consumer, tp: TopicPartition, timeout_s: float) -> tuple[int, int]:
    """(low, high) of ``tp``, asked of its leader; retried while that leader is elected or moves (a just-created
    topic answers NOT_LEADER_FOR_PARTITION for a moment), within ``timeout_s`` in all. Other errors raise at once."""
    deadline = time.monotonic() + timeout_s

    def ask() -> tuple[int, int]:
        low, high = consumer.get_watermark_offsets(tp, timeout=max(1.0, deadline - time.monotonic()))
        return int(low), int(high)

    retrying = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_random_exponential(multiplier=0.05, max=1.0),
        retry=retry_if_exception(_leader_moving),
        reraise=True,
    )
    return retrying(ask)


def assign_since(consumer: Consumer, topic: str, since_ms: int, who: str) -> set[int]:
    """Assigns every partition of ``topic`` from its first record at or after ``since_ms`` (its end when there is
    none, or while a leader moves) and returns the partitions. RuntimeError naming the fix (and the consumer closed)
    when the topic is missing."""
    described = consumer.list_topics(topic, timeout=30).topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        consumer.close()
        raise RuntimeError(f"[{who}] topic {topic} missing -> run `mmrag topics`")
    starts = [TopicPartition(topic, p, since_ms) for p in sorted(described.partitions)]
    try:
        starts = consumer.offsets_for_times(starts, timeout=30)
    except KafkaException as exc:  # records from now on are enough, a moment later
        logging.getLogger(__name__).warning("%s: %s; following %s from its end", who, exc, topic)
        starts = [TopicPartition(topic, tp.partition, OFFSET_END) for tp in starts]
    consumer.assign(starts)
    return {tp.partition for tp in starts}
