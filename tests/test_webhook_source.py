"""The HTTP webhook (MinIO's webhook target format): bearer token, 200 only once Kafka holds the records, 400 with the
parse error for malformed bodies (which go to the DLQ), and a retried delivery that has no second effect."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from local_stack.processes import free_port
from mmrag.object_store import s3_client
from tests.kafka_tools import read_topic, wait_for
from tests.object_events import dlq_records, metric, object_records

pytestmark = pytest.mark.kafka

TOKEN = "s3cr3t-token"


def post(port: int, body: bytes, token: str = TOKEN) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/minio/events", data=body, method="POST")
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def minio(bucket: str, encoded_key: str, name: str, second: int) -> bytes:
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "eventTime": f"2026-11-23T12:57:{second:02d}.000Z",
        "eventName": f"s3:{name}",
        "s3": {"bucket": {"name": bucket}, "object": {"key": encoded_key, "size": 4, "eTag": "w1"}},
    }
    return json.dumps({"EventName": f"s3:{name}", "Key": f"{bucket}/x", "Records": [record]}).encode()


def test_webhook_answers_after_kafka_and_refuses_what_it_cannot_take(deployment, bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    quiet, prefix = f"quiet-{deployment.bucket}", deployment.topic_prefix
    s3 = s3_client(deployment.s3_settings())
    s3.create_bucket(Bucket=quiet)
    s3.put_object(Bucket=quiet, Key="dir/a b+c.txt", Body=b"webhook text")
    port = free_port()
    hook = deployment.service("webhook", MMRAG_WEBHOOK_PORT=str(port), MMRAG_WEBHOOK_TOKEN=TOKEN).start()
    normalizer = deployment.service("normalizer").start()
    hook.wait_ready(), normalizer.wait_ready()
    created = minio(quiet, "dir%2Fa+b%2Bc.txt", "ObjectCreated:Put", 10)

    assert post(port, created, token="wrong")[0] == 401
    status, reply = post(port, created)
    assert status == 200 and reply["message"] == "accepted"
    [landed] = read_topic(bootstrap, f"{prefix}s3-events.v1", idle_s=3)  # durable before the 200
    assert landed.key == f"{quiet}/dir/a b+c.txt" and landed.headers["source"] == "webhook"
    assert post(port, created)[0] == 200  # the sender retried: accepted again, no second effect downstream
    status, reply = post(port, b"{not json")
    assert status == 400 and "not JSON" in str(reply["message"])
    status, reply = post(port, minio(quiet, "k.txt", "ObjectAccessed:Get", 11))
    assert status == 400 and "unknown eventName" in str(reply["message"])
    assert post(port, minio(quiet, "dir%2Fa+b%2Bc.txt", "ObjectRemoved:Delete", 12))[0] == 200

    skipped = "mmrag_object_changes_skipped_total"
    wait_for(lambda: metric(normalizer.probe_url, skipped, reason="duplicate") == 1, 60, "the retried delivery skipped")
    wait_for(lambda: len(object_records(bootstrap, prefix)) >= 2, 30, "the create and the delete")
    assert object_records(bootstrap, prefix) == [
        (f"{quiet}/dir/a b+c.txt", "MEDIA_KIND_TEXT", "text/plain; charset=utf-8"),
        (f"{quiet}/dir/a b+c.txt", "tombstone", ""),
    ]
    dlq = sorted(dlq_records(bootstrap, prefix), key=lambda d: d.value or b"")
    assert [d.value[:9] for d in dlq if d.value] == [b'{"EventNa', b"{not json"]
    for letter in dlq:
        assert letter.headers["dlq-stage"] == "webhook" and letter.headers["dlq-source-topic"].startswith("webhook:")
    assert metric(hook.probe_url, "mmrag_messages_processed_total", stage="webhook") == 5
