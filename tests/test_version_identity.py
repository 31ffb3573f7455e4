"""One object version is one change on objects.v1, however it arrives: under another event name (a multipart
upload's `Put` and `CompleteMultipartUpload` twins), from another source (SQS, webhook, EventBridge, a backfill
listing), or again after a restart. A later version, and a re-upload of the same bytes after a delete, still pass.

The normalizer's handler runs over s3-events.v1 records as each source publishes them; the object store and the
objects.v1 changelog are in memory (the stack test in test_multipart_upload.py runs the real ones)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import quote_plus

import pytest

from mmrag.changelog import LoggedRecord
from mmrag.messages import Envelope, Output
from mmrag.pb.events_pb2 import ObjectEvent
from producers.backfill import listed_change
from producers.normalizer import Normalizer, NormalizerSettings, decode_changes

pytestmark = pytest.mark.unit

BUCKET, KEY = "b", "docs/report.txt"
OID = f"{BUCKET}/{KEY}"
T0 = 1795438654000  # ms; a whole second, as a listing's LastModified is


class TextStore:
    """Every object's first bytes are plain text."""

    def read_prefix(self, bucket: str, key: str, length: int, version_id: str = "") -> bytes:
        return b"Kafka consumer groups share partitions.\n"

    def tags(self, bucket: str, key: str) -> dict[str, str]:
        return {}


class MemoryChangelog:
    """objects.v1 as the records a normalizer emitted, one partition."""

    def __init__(self, records: Iterable[LoggedRecord] = ()) -> None:
        self.records = list(records)

    def partition_count(self, topic: str) -> int:
        return 1

    def read(self, topic: str, partitions: Sequence[int]) -> Iterable[LoggedRecord]:
        return iter(self.records)


def iso(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def s3_record(name: str, t_ms: int, etag: str, version_id: str) -> bytes:
    obj = {"key": quote_plus(KEY), "size": 41, "eTag": f'"{etag}"', "versionId": version_id or None}
    record = {"eventName": name, "eventTime": iso(t_ms), "s3": {"bucket": {"name": BUCKET}, "object": obj}}
    return json.dumps({"Records": [record]}).encode()


def eventbridge(reason: str, t_ms: int, etag: str, version_id: str) -> bytes:
    obj = {"key": KEY, "size": 41, "etag": etag, **({"version-id": version_id} if version_id else {})}
    detail = {"bucket": {"name": BUCKET}, "object": obj, "reason": reason}
    return json.dumps(
        {"detail-type": "Object Created", "source": "aws.s3", "time": iso(t_ms), "detail": detail}
    ).encode()


def listing(t_ms: int, etag: str, version_id: str) -> bytes:
    modified = datetime.fromtimestamp(t_ms // 1000, tz=UTC)  # listings carry whole seconds and no versionId
    return listed_change(BUCKET, {"Key": KEY, "LastModified": modified, "ETag": f'"{etag}"', "Size": 41}).to_body()


# (source header, body of one created version at a time): how each source publishes onto s3-events.v1
Arrival = tuple[str, Callable[[int, str, str], bytes]]
ARRIVALS: dict[str, Arrival] = {
    "sqs Put": ("sqs", lambda t, e, v: s3_record("ObjectCreated:Put", t, e, v)),
    "sqs CompleteMultipartUpload": ("sqs", lambda t, e, v: s3_record("ObjectCreated:CompleteMultipartUpload", t, e, v)),
    "webhook MinIO CompleteMultipartUpload": (
        "webhook",
        lambda t, e, v: s3_record("s3:ObjectCreated:CompleteMultipartUpload", t, e, v),
    ),
    "sqs EventBridge PutObject": ("sqs", lambda t, e, v: eventbridge("PutObject", t, e, v)),
    "backfill listing": ("backfill", listing),
}


class Feed:
    """A normalizer fed s3-events.v1 records one batch each, committed like the runner does."""

    def __init__(self, changelog: MemoryChangelog | None = None, **settings: object) -> None:
        self.normalizer = Normalizer(NormalizerSettings(**settings), TextStore(), changelog or MemoryChangelog())
        self.normalizer.warm_up()
        self.normalizer.on_assign([(self.normalizer.topics.s3_events, 0)])
        self.offset = 0
        self.emitted: list[Output] = []

    def send(self, source: str, body: bytes) -> list[Output]:
        headers = {"source": source}
        env = Envelope(OID, decode_changes(body, headers), headers, "s3-events.v1", 0, self.offset, 0)
        self.offset += 1
        [result] = self.normalizer.handle([env])
        assert isinstance(result, list), result
        self.normalizer.on_commit()
        self.emitted += result
        return result

    def objects(self) -> list[tuple[str, str]]:
        """objects.v1 as (event name or "tombstone", etag)."""
        found = []
        for out in self.emitted:
            if out.topic == self.normalizer.topics.objects:
                event = out.value
                assert event is None or isinstance(event, ObjectEvent)
                found.append(("tombstone", "") if event is None else (event.event_name, event.etag))
        return found

    def dead_letters(self) -> list[Output]:
        return [o for o in self.emitted if o.topic == self.normalizer.topics.dlq]

    def changelog(self) -> list[LoggedRecord]:
        """What this normalizer wrote on objects.v1, as a restarted one reads it back."""
        records = [o for o in self.emitted if o.topic == self.normalizer.topics.objects]
        return [
            LoggedRecord(0, n, o.key, None if o.value is None else b"event", dict(o.headers))
            for n, o in enumerate(records)
        ]


@pytest.mark.parametrize("version_id", ["", "3HL4kqtJlcpXroDTDmJ"])
@pytest.mark.parametrize(("first", "second"), list(itertools.permutations(ARRIVALS, 2)))
def test_one_version_is_one_change_whatever_its_event_name_and_source(first: str, second: str, version_id: str) -> None:
    feed = Feed()
    (source_a, body_a), (source_b, body_b) = ARRIVALS[first], ARRIVALS[second]
    emitted = feed.send(source_a, body_a(T0, "e1", version_id))
    assert feed.send(source_b, body_b(T0 + 1, "e1", version_id)) == []
    assert feed.send(source_b, body_b(T0 + 1, "e1", version_id)) == []  # and a redelivery of it
    [record] = emitted
    assert isinstance(record.value, ObjectEvent) and record.value.etag == "e1" and record.key == OID
    listed = first == "backfill listing"  # a listing names no versionId: the ETag is the identity
    assert record.headers["etag"] == "e1" and record.headers["version-id"] == ("" if listed else version_id)


def test_later_versions_and_a_reupload_after_a_delete_are_news() -> None:
    feed = Feed()
    feed.send("sqs", s3_record("ObjectCreated:Put", T0, "e1", ""))
    feed.send("sqs", s3_record("ObjectCreated:CompleteMultipartUpload", T0 + 1, "e1", ""))
    feed.send("sqs", s3_record("ObjectRemoved:Delete", T0 + 2000, "", ""))
    feed.send("sqs", s3_record("ObjectCreated:Put", T0 + 3000, "e1", ""))  # the same bytes again: news
    feed.send("webhook", s3_record("s3:ObjectCreated:CompleteMultipartUpload", T0 + 3001, "e1", ""))
    feed.send("sqs", s3_record("ObjectCreated:Put", T0 + 4000, "e2", ""))  # other bytes
    feed.send("sqs", s3_record("ObjectCreated:CompleteMultipartUpload", T0 + 1, "e1", ""))  # the first, late: stale
    assert feed.objects() == [
        ("ObjectCreated:Put", "e1"),
        ("tombstone", ""),
        ("ObjectCreated:Put", "e1"),
        ("ObjectCreated:Put", "e2"),
    ]


def test_a_new_version_of_the_same_bytes_in_a_versioned_bucket_is_news() -> None:
    feed = Feed()
    feed.send("sqs", s3_record("ObjectCreated:Put", T0, "e1", "v1"))
    feed.send("sqs", s3_record("ObjectCreated:Put", T0 + 1000, "e1", "v2"))
    feed.send("backfill", listing(T0 + 2000, "e1", ""))  # the listing names no version: the current bytes
    assert [e.value.version for e in feed.emitted if isinstance(e.value, ObjectEvent)] == ["v1", "v2"]


def test_a_rejected_version_is_dead_lettered_once() -> None:
    feed = Feed(max_object_bytes=10)
    feed.send("sqs", s3_record("ObjectCreated:Put", T0, "e1", ""))
    feed.send("sqs", s3_record("ObjectCreated:CompleteMultipartUpload", T0 + 1, "e1", ""))
    assert feed.objects() == [("tombstone", "")] and len(feed.dead_letters()) == 1


@pytest.mark.parametrize("legacy_headers", [False, True])
def test_a_restarted_normalizer_knows_the_version_from_objects_headers(legacy_headers: bool) -> None:
    feed = Feed()
    feed.send("sqs", s3_record("ObjectCreated:Put", T0, "e1", ""))
    records = feed.changelog()
    if legacy_headers:  # written before objects.v1 records carried etag and version-id
        for record in records:
            del record.headers["etag"], record.headers["version-id"]
    restarted = Feed(MemoryChangelog(records))
    assert restarted.send("sqs", s3_record("ObjectCreated:CompleteMultipartUpload", T0 + 1, "e1", "")) == []
    assert restarted.send("sqs", s3_record("ObjectCreated:Put", T0 + 1000, "e2", "")) != []
