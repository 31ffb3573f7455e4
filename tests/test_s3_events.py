"""S3 notification parsing: keys, versions, deletes, test events and malformed bodies."""

from __future__ import annotations

import json

import pytest

from mmrag.errors import PermanentError
from mmrag.pb.events_pb2 import MediaKind
from mmrag.settings import BaseServiceSettings
from producers.s3_events import parse_notification
from producers.sqs_bridge import outputs_for_message

pytestmark = pytest.mark.unit


def record(name: str, key: str, **obj: object) -> dict[str, object]:
    return {
        "eventName": name,
        "eventTime": "2026-11-23T12:57:34.526Z",
        "s3": {"bucket": {"name": "bkt"}, "object": {"key": key, "size": 5, **obj}},
    }


def test_created_record_becomes_an_object_event_with_a_decoded_key() -> None:
    body = json.dumps({"Records": [record("ObjectCreated:Put", "dir%2Fa+b%2Bc.txt", eTag="abc", sequencer="0F")]})
    [change] = parse_notification(body, "test")
    event = change.event
    assert not change.deleted
    assert (event.object_id, event.key, event.version) == ("bkt/dir/a b+c.txt", "dir/a b+c.txt", "abc")
    assert event.media_kind == MediaKind.MEDIA_KIND_TEXT and event.event_time_ms == 1795438654526


def test_version_id_wins_over_etag() -> None:
    body = json.dumps({"Records": [record("ObjectCreated:Put", "p.png", eTag="e", versionId="ver-7")]})
    assert parse_notification(body, "test")[0].event.version == "ver-7"


def test_removed_record_becomes_a_tombstone_with_identity_headers() -> None:
    body = json.dumps({"Records": [record("ObjectRemoved:Delete", "x.md", eTag="e1")]})
    [out] = outputs_for_message(body, "m1", BaseServiceSettings(topic_prefix="p."))
    assert out.topic == "p.objects.v1" and out.key == "bkt/x.md" and out.value is None
    assert out.headers["version"] == "e1" and out.headers["event-name"] == "ObjectRemoved:Delete"


def test_test_event_yields_nothing() -> None:
    body = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "bkt"})
    assert parse_notification(body, "test") == []
    assert outputs_for_message(body, "m1", BaseServiceSettings()) == []


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        json.dumps({"Records": "x"}),
        json.dumps({"Records": [{"a": 1}]}),
        json.dumps({"Records": [record("ObjectTagging:Put", "k.txt")]}),
    ],
)
def test_malformed_bodies_are_refused_and_go_to_the_dlq(body: str) -> None:
    with pytest.raises(PermanentError):
        parse_notification(body, "test")
    [out] = outputs_for_message(body, "m9", BaseServiceSettings())
    assert out.topic == "dlq.v1" and out.value == body.encode()
    assert out.headers["dlq-stage"] == "sqs_bridge" and out.headers["dlq-source-topic"] == "sqs:m9"


def test_unsupported_types_go_to_the_dlq_with_the_reason() -> None:
    body = json.dumps({"Records": [record("ObjectCreated:Put", "tool.exe", eTag="e")]})
    [out] = outputs_for_message(body, "m2", BaseServiceSettings())
    assert out.topic == "dlq.v1" and out.key == "bkt/tool.exe"
    assert "unsupported content type" in out.headers["dlq-error-message"]
