"""MinIO/Ceph publishing `Records[]` straight to s3-events.v1: the normalizer turns them into objects.v1 exactly once,
forwards records published under a foreign partitioning, dead-letters garbage, and restores its state on restart."""

from __future__ import annotations

import json
from urllib.parse import quote_plus

import pytest
from confluent_kafka import Producer

from mmrag.kafka_clients import key_partition
from mmrag.object_store import S3ObjectStore
from tests.kafka_tools import read_topic, wait_for
from tests.object_events import dlq_records, metric, object_records

pytestmark = pytest.mark.kafka

T0 = 1795438654000
TEXT = "text/plain; charset=utf-8"
MARKDOWN = "text/markdown; charset=utf-8"  # plain text by its bytes, markdown by its key


def minio_body(bucket: str, key: str, name: str, t_ms: int, etag: str = "e1") -> bytes:
    """A MinIO Kafka-target message: its envelope, one record, the key percent-encoded '/' included."""
    seconds, millis = divmod(t_ms, 1000)
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "eventTime": f"2026-11-23T12:57:{seconds % 60:02d}.{millis:03d}Z",
        "eventName": f"s3:{name}",
        "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key, safe=""), "size": 4, "eTag": etag}},
    }
    return json.dumps({"EventName": f"s3:{name}", "Key": f"{bucket}/{key}", "Records": [record]}).encode()


def publish(bootstrap: str, topic: str, key: str, value: bytes, partition: int | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    extra = {} if partition is None else {"partition": partition}
    producer.produce(topic, key=key.encode(), value=value, **extra)
    assert producer.flush(10) == 0


def test_minio_records_are_normalized_once_forwarded_and_restored(deployment, bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    bucket, prefix = deployment.bucket, deployment.topic_prefix
    events = f"{prefix}s3-events.v1"
    store = S3ObjectStore(deployment.s3_settings(), "test")
    for key in ("minio/a b.txt", "minio/misrouted.md"):
        store.put(bucket, key, b"some text")
    normalizer = deployment.service("normalizer").start().wait_ready()

    a, moved = f"{bucket}/minio/a b.txt", f"{bucket}/minio/misrouted.md"
    created = minio_body(bucket, "minio/a b.txt", "ObjectCreated:Put", T0)
    publish(bootstrap, events, a, created)
    publish(bootstrap, events, a, created)  # the target retried: a duplicate
    home = key_partition(moved, 3)
    publish(bootstrap, events, moved, minio_body(bucket, "minio/misrouted.md", "ObjectCreated:Put", T0), (home + 1) % 3)
    publish(bootstrap, events, "junk", b"\x00\x01 not a notification")

    skipped = "mmrag_object_changes_skipped_total"
    wait_for(lambda: metric(normalizer.probe_url, skipped, reason="duplicate") == 1, 60, "the duplicate skipped")
    wait_for(lambda: len(object_records(bootstrap, prefix)) >= 2, 60, "both objects")
    expected = [(a, "MEDIA_KIND_TEXT", TEXT), (moved, "MEDIA_KIND_TEXT", MARKDOWN)]
    assert sorted(object_records(bootstrap, prefix)) == expected
    on_events = read_topic(bootstrap, events, idle_s=1.0)
    assert {r.partition for r in on_events if r.key == a} == {key_partition(a, 3)}  # librdkafka's partitioner agrees
    assert sorted(r.partition for r in on_events if r.key == moved) == sorted([home, (home + 1) % 3])  # forwarded once
    objects = read_topic(bootstrap, f"{prefix}objects.v1", idle_s=1.0)
    assert {(r.key, r.partition) for r in objects} == {(a, key_partition(a, 3)), (moved, home)}  # co-partitioned

    [junk] = dlq_records(bootstrap, prefix)
    assert junk.key == "junk" and junk.value == b"\x00\x01 not a notification"
    assert junk.headers["dlq-stage"] == "normalizer" and junk.headers["dlq-source-topic"] == events
    assert "not JSON" in junk.headers["dlq-error-message"]

    normalizer.stop()
    normalizer = deployment.service("normalizer").start().wait_ready()
    publish(bootstrap, events, a, minio_body(bucket, "minio/a b.txt", "ObjectCreated:Put", T0 - 1000, "old"))
    publish(bootstrap, events, a, minio_body(bucket, "minio/a b.txt", "ObjectRemoved:Delete", T0 + 1000))
    wait_for(lambda: metric(normalizer.probe_url, skipped, reason="stale") == 1, 60, "the stale create skipped")
    wait_for(lambda: len(object_records(bootstrap, prefix)) == 3, 30, "the delete's tombstone")
    assert sorted(object_records(bootstrap, prefix)) == [
        (a, "MEDIA_KIND_TEXT", TEXT),
        (a, "tombstone", ""),
        (moved, "MEDIA_KIND_TEXT", MARKDOWN),
    ]
