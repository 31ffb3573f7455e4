"""S3 change notifications in every envelope the object stores send, parsed into `S3Change`s.

Accepted bodies: S3/MinIO/Ceph `Records[]` (keys URL-encoded as S3 encodes them, `s3:` event-name prefix optional),
SNS-wrapped S3 notifications, EventBridge "Object Created"/"Object Deleted" events (keys not encoded) and the
`s3:TestEvent` (no changes). Anything else raises PermanentError naming the source and the parse problem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from mmrag.errors import PermanentError
from mmrag.ids import object_id
from mmrag.pb.events_pb2 import MediaKind, ObjectEvent

STAGE = "producer"
CREATED, REMOVED, TAGGING = "ObjectCreated", "ObjectRemoved", "ObjectTagging"
# EventBridge's `reason` of an "Object Created" event, as the S3 event-name suffix of the same change.
EVENTBRIDGE_CREATED = {"PutObject": "Put", "POST Object": "Post", "CopyObject": "Copy"}


@dataclass(frozen=True)
class S3Change:
    """One created or removed object, normalized from any notification flavour. ``key`` is decoded."""

    bucket: str
    key: str
    event_name: str  # e.g. ObjectCreated:Put, ObjectRemoved:DeleteMarkerCreated (no "s3:" prefix)
    event_time_ms: int
    size: int = 0
    etag: str = ""
    version_id: str = ""
    sequencer: str = ""

    @property
    def object_id(self) -> str:
        return object_id(self.bucket, self.key)

    @property
    def deleted(self) -> bool:
        return self.event_name.startswith(REMOVED)

    @property
    def tagging(self) -> bool:
        """A change of the object's tags alone (``ObjectTagging:Put`` / ``:Delete``): its readers may change."""
        return self.event_name.startswith(TAGGING)

    @property
    def version(self) -> str:
        return self.version_id or self.etag or self.sequencer

    def to_record(self) -> dict[str, Any]:
        """The canonical S3 record of this change (key URL-encoded the way S3 encodes it)."""
        obj: dict[str, Any] = {"key": quote_plus(self.key, safe="/"), "size": self.size, "eTag": self.etag}
        obj.update({k: v for k, v in (("versionId", self.version_id), ("sequencer", self.sequencer)) if v})
        seconds, millis = divmod(self.event_time_ms, 1000)
        stamp = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=millis * 1000)
        return {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "eventTime": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "eventName": self.event_name,
            "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": self.bucket}, "object": obj},
        }

    def to_body(self) -> bytes:
        """A one-record notification body: what the sources publish on s3-events.v1."""
        return json.dumps({"Records": [self.to_record()]}, separators=(",", ":")).encode()

    def to_event(self, source: str, media_kind: MediaKind, content_type: str) -> ObjectEvent:
        return ObjectEvent(
            object_id=self.object_id,
            bucket=self.bucket,
            key=self.key,
            version=self.version,
            version_id=self.version_id,
            etag=self.etag,
            sequencer=self.sequencer,
            size=self.size,
            content_type=content_type,
            media_kind=media_kind,
            event_time_ms=self.event_time_ms,
            source=source,
            event_name=self.event_name,
        )

    def identity_headers(self) -> dict[str, str]:
        """Headers every objects.v1 record carries (tombstones too): the normalizer restores its state from them."""
        return {
            "object-id": self.object_id,
            "version": self.version,
            "version-id": self.version_id,
            "etag": self.etag,
            "event-time-ms": str(self.event_time_ms),
            "sequencer": self.sequencer,
            "event-name": self.event_name,
        }


def parse_notification(body: str | bytes, source: str) -> list[S3Change]:
    """Parses one notification body of any accepted flavour. A test event gives []; malformed raises PermanentError."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PermanentError(STAGE, source, f"notification is not JSON ({exc})", "fix the publisher") from exc
    if not isinstance(data, dict):
        raise PermanentError(STAGE, source, "notification is not a JSON object", "fix the publisher")
    if data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
        return parse_notification(data["Message"], f"{source} (SNS)")  # SNS wraps the S3 body as a string
    if data.get("Event") == "s3:TestEvent":
        return []
    if data.get("source") == "aws.s3" and "detail-type" in data:
        return [_parse_eventbridge(data, source)]
    records = data.get("Records")
    if not isinstance(records, list):
        raise PermanentError(
            STAGE, source, "not an S3 notification (no Records[], SNS or EventBridge envelope)", "fix the publisher"
        )
    return [_parse_record(record, source) for record in records]


def _parse_record(record: Any, source: str) -> S3Change:
    try:
        name = str(record["eventName"]).removeprefix("s3:")
        bucket = str(record["s3"]["bucket"]["name"])
        obj: Mapping[str, Any] = record["s3"]["object"]
        key = unquote_plus(str(obj["key"]))  # S3 URL-encodes keys ('+' is a space, moto and MinIO encode '/' too)
    except (KeyError, TypeError) as exc:
        raise PermanentError(STAGE, source, f"record lacks {exc}", "fix the publisher's records") from exc
    return _change(bucket, key, name, record.get("eventTime"), obj, obj.get("versionId"), source)


def _parse_eventbridge(data: Mapping[str, Any], source: str) -> S3Change:
    try:
        detail = data["detail"]
        kind = str(data["detail-type"])
        bucket = str(detail["bucket"]["name"])
        obj: Mapping[str, Any] = detail["object"]
        key = str(obj["key"])  # EventBridge sends keys as they are (not URL-encoded)
    except (KeyError, TypeError) as exc:
        raise PermanentError(STAGE, source, f"EventBridge event lacks {exc}", "fix the rule's target input") from exc
    if kind == "Object Created":
        name = f"{CREATED}:{EVENTBRIDGE_CREATED.get(str(detail.get('reason')), str(detail.get('reason') or 'Put'))}"
    elif kind == "Object Deleted":
        marker = detail.get("deletion-type") == "Delete Marker Created"
        name = f"{REMOVED}:{'DeleteMarkerCreated' if marker else 'Delete'}"
    elif kind in ("Object Tags Added", "Object Tags Deleted"):
        name = f"{TAGGING}:{'Put' if kind.endswith('Added') else 'Delete'}"
    else:
        fix = "route only Object Created/Deleted and Object Tags Added/Deleted"
        raise PermanentError(STAGE, f"{bucket}/{key} ({source})", f"unsupported EventBridge event {kind!r}", fix)
    return _change(bucket, key, name, data.get("time"), obj, obj.get("version-id"), source)


def _change(
    bucket: str, key: str, name: str, time_raw: Any, obj: Mapping[str, Any], version_id: Any, source: str
) -> S3Change:
    """The change from the object part both flavours share (etag is `eTag` in S3 records, `etag` in EventBridge)."""
    try:
        size = int(obj.get("size") or 0)
    except (TypeError, ValueError) as exc:
        raise PermanentError(
            STAGE, source, f"object size {obj.get('size')!r} is no number", "fix the publisher"
        ) from exc
    change = S3Change(
        bucket=bucket,
        key=key,
        event_name=name,
        event_time_ms=_time_ms(time_raw),
        size=size,
        etag=str(obj.get("eTag") or obj.get("etag") or "").strip('"'),
        version_id=_version_id(version_id),
        sequencer=str(obj.get("sequencer") or ""),
    )
    return _checked(change, source)


def _checked(change: S3Change, source: str) -> S3Change:
    subject = f"{change.object_id} ({source})"
    if not change.bucket or not change.key:
        raise PermanentError(STAGE, source, "record has an empty bucket or key", "fix the publisher's records")
    if not change.event_name.startswith((CREATED, REMOVED, TAGGING)):
        raise PermanentError(
            STAGE,
            subject,
            f"unknown eventName {change.event_name!r}",
            "subscribe only to s3:ObjectCreated:*, s3:ObjectRemoved:* and s3:ObjectTagging:*",
        )
    if not change.sequencer and change.event_time_ms <= 0:
        raise PermanentError(
            STAGE, subject, "record has neither a sequencer nor a valid eventTime, so it cannot be ordered", "fix it"
        )
    return change


def _version_id(raw: Any) -> str:
    return "" if raw in (None, "", "null") else str(raw)


def _time_ms(raw: Any) -> int:
    """Milliseconds since the epoch of an ISO-8601 time (or of epoch seconds); 0 when absent or unreadable."""
    if isinstance(raw, int | float):
        return round(raw * 1000)
    try:
        return round(datetime.fromisoformat(str(raw or "").replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0
