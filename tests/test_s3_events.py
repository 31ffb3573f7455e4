"""S3 notification parsing: every envelope, key encodings, versions, deletes, test events and malformed bodies."""

from __future__ import annotations

import json
from urllib.parse import quote_plus

import pytest

from mmrag.errors import PermanentError
from producers.s3_events import S3Change, parse_notification

pytestmark = pytest.mark.unit


def record(name: str, key: str, **obj: object) -> dict[str, object]:
    return {
        "eventName": name,
        "eventTime": "2026-11-23T12:57:34.526Z",
        "s3": {"bucket": {"name": "bkt"}, "object": {"key": key, "size": 5, **obj}},
    }


def body(*records: dict[str, object]) -> str:
    return json.dumps({"Records": list(records)})


@pytest.mark.parametrize(
    ("encoded", "key"),
    [
        ("a+b.txt", "a b.txt"),  # S3 encodes a space as '+'
        ("c%2Bd.txt", "c+d.txt"),  # and a real '+' as %2B
        ("dir%2Fsub%2Fx.md", "dir/sub/x.md"),  # moto and MinIO encode '/'
        ("dir/sub/x.md", "dir/sub/x.md"),  # AWS leaves it
        ("caf%C3%A9+%E6%97%A5%E6%9C%AC.txt", "café 日本.txt"),  # unicode as UTF-8 percent-escapes
        ("100%25+done%3F.txt", "100% done?.txt"),
    ],
)
def test_keys_are_decoded_exactly_as_s3_encodes_them(encoded: str, key: str) -> None:
    [change] = parse_notification(body(record("ObjectCreated:Put", encoded, eTag="e")), "test")
    assert (change.key, change.object_id) == (key, f"bkt/{key}")
    assert quote_plus(key, safe="/") == change.to_record()["s3"]["object"]["key"]  # canonical form re-encodes
    assert parse_notification(change.to_body(), "again") == [change]  # and round-trips


def test_created_record_fields() -> None:
    raw = body(record("ObjectCreated:Put", "x.txt", eTag='"abc"', sequencer="0F", versionId="v7"))
    [change] = parse_notification(raw, "test")
    assert change == S3Change("bkt", "x.txt", "ObjectCreated:Put", 1795438654526, 5, "abc", "v7", "0F")
    assert change.version == "v7" and not change.deleted


def test_minio_records_with_s3_prefixed_event_names() -> None:
    minio = {
        "EventName": "s3:ObjectRemoved:Delete",
        "Key": "bkt/a b",
        "Records": [record("s3:ObjectRemoved:Delete", "a+b")],
    }
    [change] = parse_notification(json.dumps(minio), "test")
    assert change.event_name == "ObjectRemoved:Delete" and change.deleted and change.key == "a b"


def test_sns_wrapped_notification_is_unwrapped() -> None:
    inner = body(record("ObjectRemoved:DeleteMarkerCreated", "k.md", versionId="dm1"))
    sns = {"Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:x", "Message": inner}
    [change] = parse_notification(json.dumps(sns), "test")
    assert change.event_name == "ObjectRemoved:DeleteMarkerCreated" and change.version == "dm1"


def eventbridge(kind: str, key: str, **detail: object) -> str:
    obj = {"key": key, "size": 9, "etag": "e1", "version-id": "v1", "sequencer": "00617F0829"}
    return json.dumps(
        {
            "version": "0",
            "detail-type": kind,
            "source": "aws.s3",
            "time": "2026-11-23T12:57:34Z",
            "detail": {"bucket": {"name": "bkt"}, "object": obj, **detail},
        }
    )


def test_tagging_events_are_changes_of_readers_in_both_flavours() -> None:
    [put] = parse_notification(json.dumps({"Records": [record("ObjectTagging:Put", "k.txt")]}), "t")
    [gone] = parse_notification(eventbridge("Object Tags Deleted", "k"), "t")
    assert (put.event_name, put.tagging, put.deleted) == ("ObjectTagging:Put", True, False)
    assert (gone.event_name, gone.tagging, gone.deleted) == ("ObjectTagging:Delete", True, False)


def test_eventbridge_created_and_deleted() -> None:
    [created] = parse_notification(eventbridge("Object Created", "a b+c.txt", reason="PutObject"), "t")
    assert created == S3Change("bkt", "a b+c.txt", "ObjectCreated:Put", 1795438654000, 9, "e1", "v1", "00617F0829")
    [marker] = parse_notification(eventbridge("Object Deleted", "k", **{"deletion-type": "Delete Marker Created"}), "t")
    assert marker.event_name == "ObjectRemoved:DeleteMarkerCreated"
    [gone] = parse_notification(eventbridge("Object Deleted", "k", **{"deletion-type": "Permanently Deleted"}), "t")
    assert gone.event_name == "ObjectRemoved:Delete"


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "bkt"}),
        json.dumps({"Type": "Notification", "Message": json.dumps({"Event": "s3:TestEvent"})}),
    ],
)
def test_test_events_yield_nothing(raw: str) -> None:
    assert parse_notification(raw, "test") == []


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        json.dumps({"Records": "x"}),
        json.dumps({"Records": [{"a": 1}]}),
        json.dumps({"Records": [record("ObjectRestore:Post", "k.txt")]}),
        json.dumps({"Records": [record("ObjectCreated:Put", "k.txt", size="big")]}),
        json.dumps({"Records": [{**record("ObjectCreated:Put", "k.txt"), "eventTime": "yesterday"}]}),
        json.dumps({"Type": "Notification", "Message": "{oops"}),
        eventbridge("Object Restore Completed", "k"),
    ],
)
def test_malformed_bodies_raise_a_permanent_error_naming_the_source(raw: str) -> None:
    with pytest.raises(PermanentError) as info:
        parse_notification(raw, "sqs:m9")
    assert "sqs:m9" in str(info.value)
