"""S3 -> SQS -> sqs_bridge -> s3-events.v1 -> normalizer -> objects.v1, against the real broker and the local S3.

Asserts exactly what landed on objects.v1 and dlq.v1: key encodings, sniffed types, a delete, an oversized and an
unsupported object, a duplicate delivery, out-of-order pairs, SNS and EventBridge envelopes, a test event and a
malformed body.
"""

from __future__ import annotations

import io
import json
from urllib.parse import quote_plus

import pytest
from PIL import Image

from mmrag.object_store import S3ObjectStore, s3_client
from tests.kafka_tools import wait_for
from tests.object_events import dlq_records, metric, object_records

pytestmark = pytest.mark.kafka

TEXT = "text/plain; charset=utf-8"
MARKDOWN = "text/markdown; charset=utf-8"  # plain text by its bytes, markdown by its key
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(56)
T0 = 1795438654000


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(buf, format="PNG")
    return buf.getvalue()


def start(deployment, **normalizer_env: str):  # type: ignore[no-untyped-def]
    bridge = deployment.service("sqs_bridge").start()
    normalizer = deployment.service("normalizer", **normalizer_env).start()
    return bridge.wait_ready(), normalizer.wait_ready()


def queue_is_empty(deployment) -> bool:  # type: ignore[no-untyped-def]
    sqs = s3_client(deployment.s3_settings(), "sqs")
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs.get_queue_attributes(QueueUrl=deployment.queue_url, AttributeNames=names)["Attributes"]
    return all(attrs[n] == "0" for n in names)


def test_uploads_and_deletes_land_once_each_with_decoded_keys_and_sniffed_types(deployment, bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    start(deployment, MMRAG_MAX_OBJECT_BYTES="2000")
    store = S3ObjectStore(deployment.s3_settings(), "test")
    bucket, prefix = deployment.bucket, deployment.topic_prefix
    uploads = {
        "docs/a b.txt": b"spaces in the key",
        "docs/c+d.md": b"# a plus in the key",
        "docs/caf\u00e9/\u65e5\u672c \u00fc.md": b"unicode in the key",
        "docs/100% done?.txt": b"percent and question mark",
        "img/photo.txt": png(),  # the bytes decide, not the extension
        "bin/tool.md": ELF,
        "big/large.txt": b"x" * 5000,
    }
    for key, data in uploads.items():
        store.put(bucket, key, data)
    wait_for(lambda: len(object_records(bootstrap, prefix)) >= len(uploads), 60, "one record per upload")
    store.delete(bucket, "docs/c+d.md")  # after its create landed, so the create never finds it gone
    wait_for(lambda: len(object_records(bootstrap, prefix)) > len(uploads), 60, "the delete's tombstone")
    wait_for(lambda: queue_is_empty(deployment), 30, "every SQS message deleted after Kafka took it")

    records = object_records(bootstrap, prefix)
    oid = {key: f"{bucket}/{key}" for key in uploads}
    assert sorted(records) == sorted(
        [
            (oid["docs/a b.txt"], "MEDIA_KIND_TEXT", TEXT),
            (oid["docs/c+d.md"], "MEDIA_KIND_TEXT", MARKDOWN),
            (oid["docs/c+d.md"], "tombstone", ""),
            (oid["docs/caf\u00e9/\u65e5\u672c \u00fc.md"], "MEDIA_KIND_TEXT", MARKDOWN),
            (oid["docs/100% done?.txt"], "MEDIA_KIND_TEXT", TEXT),
            (oid["img/photo.txt"], "MEDIA_KIND_IMAGE", "image/png"),
            (oid["bin/tool.md"], "tombstone", "unsupported content type: binary content (application/octet-stream) "
             "that is no image, PDF or DOCX"),
            (oid["big/large.txt"], "tombstone", "5000 bytes is over the limit of 2000"),
        ]
    )  # fmt: skip
    assert [r[1] for r in records if r[0] == oid["docs/c+d.md"]] == ["MEDIA_KIND_TEXT", "tombstone"]

    dlq = {d.key: d for d in dlq_records(bootstrap, prefix)}
    assert set(dlq) == {oid["bin/tool.md"], oid["big/large.txt"]}
    for key in ("bin/tool.md", "big/large.txt"):
        letter = dlq[oid[key]]
        assert letter.headers["dlq-stage"] == "normalizer" and letter.headers["dlq-error-class"] == "PermanentError"
        assert letter.headers["dlq-source-topic"] == f"{prefix}s3-events.v1" and letter.headers["source"] == "sqs"
        [raw] = json.loads(letter.value or b"")["Records"]  # the raw s3-events record, key encoded as S3 does
        assert raw["s3"]["object"]["key"] == quote_plus(key, safe="/")
    assert "over the limit" in dlq[oid["big/large.txt"]].headers["dlq-error-message"]
    assert "MMRAG_MAX_OBJECT_BYTES" in dlq[oid["big/large.txt"]].headers["dlq-fix"]


def record(bucket: str, key: str, name: str, t_ms: int, **obj: object) -> dict[str, object]:
    seconds, millis = divmod(t_ms, 1000)
    stamp = f"2026-11-23T12:57:{seconds % 60:02d}.{millis:03d}Z"
    return {
        "eventName": name,
        "eventTime": stamp,
        "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key), "size": 4, **obj}},
    }


def notification(bucket: str, key: str, name: str, t_ms: int, **obj: object) -> str:
    return json.dumps({"Records": [record(bucket, key, name, t_ms, **obj)]})


def envelopes_and_faults(quiet: str) -> list[tuple[str, str]]:
    """Bodies as SQS may carry them: a redelivered duplicate, a test event, a malformed body, SNS and EventBridge
    envelopes, and a notification from a bucket outside the allow-list."""
    dup = notification(quiet, "dup.txt", "ObjectCreated:Put", T0, eTag="d1")
    inner = notification(quiet, "sns.txt", "ObjectCreated:Put", T0, eTag="s1")
    sns = {"Type": "Notification", "MessageId": "n1", "TopicArn": "arn:aws:sns:t", "Message": inner}
    obj = {"key": "eb key+x.txt", "size": 4, "etag": "b1"}
    eventbridge = {
        "detail-type": "Object Created",
        "source": "aws.s3",
        "time": "2026-11-23T12:57:34Z",
        "detail": {"bucket": {"name": quiet}, "object": obj, "reason": "PutObject"},
    }
    return [
        ("dup", dup),
        ("dup again", dup),  # SQS redelivery
        ("test event", json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": quiet})),
        ("malformed", "not json {"),
        ("sns", json.dumps(sns)),
        ("eventbridge", json.dumps(eventbridge)),
        ("not allowed", notification("elsewhere", "x.txt", "ObjectCreated:Put", T0, eTag="x")),
    ]


def test_duplicates_out_of_order_envelopes_and_malformed_bodies(deployment, bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    quiet = f"quiet-{deployment.bucket}"  # no notifications: the crafted ones below are the only ones
    s3 = s3_client(deployment.s3_settings())
    s3.create_bucket(Bucket=quiet)
    for key in ("dup.txt", "seq.txt", "sns.txt", "eb key+x.txt"):
        s3.put_object(Bucket=quiet, Key=key, Body=b"text")
    _, normalizer = start(deployment, MMRAG_ALLOWED_BUCKETS=f"{deployment.bucket},{quiet}")
    sqs = s3_client(deployment.s3_settings(), "sqs")
    sent: dict[str, str] = {}

    def send(label: str, body: str) -> None:
        sent[label] = sqs.send_message(QueueUrl=deployment.queue_url, MessageBody=body)["MessageId"]

    for label, body in envelopes_and_faults(quiet):
        send(label, body)
    # Out-of-order pairs: the newer change first; the older one only once the newer landed.
    send("delete", notification(quiet, "gone.txt", "ObjectRemoved:Delete", T0 + 2000))
    send("seq new", notification(quiet, "seq.txt", "ObjectCreated:Put", T0, eTag="v2", sequencer="0B"))
    wait_for(lambda: len(object_records(bootstrap, deployment.topic_prefix)) >= 5, 60, "the first five changes")
    send("stale create", notification(quiet, "gone.txt", "ObjectCreated:Put", T0))
    send("seq old", notification(quiet, "seq.txt", "ObjectCreated:Put", T0 + 5000, eTag="v1", sequencer="0A"))

    skipped = "mmrag_object_changes_skipped_total"
    wait_for(lambda: metric(normalizer.probe_url, skipped, reason="stale") == 2, 60, "both stale changes skipped")
    assert metric(normalizer.probe_url, skipped, reason="duplicate") == 1
    assert sorted(object_records(bootstrap, deployment.topic_prefix)) == [
        (f"{quiet}/dup.txt", "MEDIA_KIND_TEXT", TEXT),
        (f"{quiet}/eb key+x.txt", "MEDIA_KIND_TEXT", TEXT),
        (f"{quiet}/gone.txt", "tombstone", ""),
        (f"{quiet}/seq.txt", "MEDIA_KIND_TEXT", TEXT),
        (f"{quiet}/sns.txt", "MEDIA_KIND_TEXT", TEXT),
    ]
    dlq = sorted(dlq_records(bootstrap, deployment.topic_prefix), key=lambda d: d.headers["dlq-stage"])
    assert [(d.headers["dlq-stage"], d.key) for d in dlq] == [
        ("normalizer", "elsewhere/x.txt"),
        ("sqs_bridge", sent["malformed"]),
    ]
    assert "bucket not allowed" in dlq[0].headers["dlq-error-message"]
    assert dlq[1].value == b"not json {" and dlq[1].headers["dlq-source-topic"] == f"sqs:{sent['malformed']}"
    assert "not JSON" in dlq[1].headers["dlq-error-message"]
    wait_for(lambda: queue_is_empty(deployment), 30, "every SQS message deleted, the test event and DLQ'd one too")
