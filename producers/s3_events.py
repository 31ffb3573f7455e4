"""S3 event notifications (AWS/moto via SQS, MinIO/Ceph `Records[]`) -> ObjectEvents and tombstones on objects.v1."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote_plus

from mmrag.errors import PermanentError
from mmrag.ids import object_id
from mmrag.messages import Output
from mmrag.pb.events_pb2 import MediaKind, ObjectEvent

STAGE = "producer"

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".csv", ".json"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
DOCUMENT_SUFFIXES = {".pdf", ".html", ".htm", ".docx"}


@dataclass(frozen=True)
class S3Change:
    """One created or removed object, normalized from any notification flavour."""

    event: ObjectEvent
    deleted: bool


def media_kind_for(key: str) -> MediaKind:
    suffix = PurePosixPath(key).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return MediaKind.MEDIA_KIND_TEXT
    if suffix in IMAGE_SUFFIXES:
        return MediaKind.MEDIA_KIND_IMAGE
    if suffix in DOCUMENT_SUFFIXES:
        return MediaKind.MEDIA_KIND_DOCUMENT
    return MediaKind.MEDIA_KIND_UNSUPPORTED


def parse_notification(body: str | bytes, source: str) -> list[S3Change]:
    """Parses one notification body. ``s3:TestEvent`` gives []; anything malformed raises PermanentError."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PermanentError(STAGE, source, f"notification is not JSON ({exc})", "fix the publisher") from exc
    if isinstance(data, dict) and data.get("Event") == "s3:TestEvent":
        return []
    records = data.get("Records") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise PermanentError(STAGE, source, "notification has no Records[] list", "fix the publisher")
    return [_parse_record(record, source) for record in records]


def _parse_record(record: Any, source: str) -> S3Change:
    try:
        name = str(record["eventName"])
        bucket = str(record["s3"]["bucket"]["name"])
        obj: Mapping[str, Any] = record["s3"]["object"]
        key = unquote_plus(str(obj["key"]))  # S3 URL-encodes keys in notifications ('+' is a space)
    except (KeyError, TypeError) as exc:
        raise PermanentError(STAGE, source, f"record lacks {exc}", "fix the publisher's record format") from exc
    if not (name.startswith("ObjectCreated") or name.startswith("ObjectRemoved")):
        raise PermanentError(
            STAGE,
            f"{bucket}/{key}",
            f"unknown eventName {name!r}",
            "subscribe only to s3:ObjectCreated:* and s3:ObjectRemoved:*",
        )
    version_id = str(obj.get("versionId") or "")
    etag = str(obj.get("eTag") or obj.get("etag") or "").strip('"')
    sequencer = str(obj.get("sequencer") or "")
    event = ObjectEvent(
        object_id=object_id(bucket, key),
        bucket=bucket,
        key=key,
        version=version_id or etag or sequencer,
        version_id=version_id,
        etag=etag,
        sequencer=sequencer,
        size=int(obj.get("size") or 0),
        media_kind=media_kind_for(key),
        event_time_ms=_event_time_ms(record),
        source=source,
        event_name=name,
    )
    return S3Change(event, deleted=name.startswith("ObjectRemoved"))


def _event_time_ms(record: Mapping[str, Any]) -> int:
    raw = str(record.get("eventTime") or "")
    try:
        return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def identity_headers(event: ObjectEvent) -> dict[str, str]:
    """Headers a tombstone keeps so consumers still know which version and when."""
    return {
        "object-id": event.object_id,
        "version": event.version,
        "event-time-ms": str(event.event_time_ms),
        "sequencer": event.sequencer,
        "event-name": event.event_name,
    }


def change_output(change: S3Change, objects_topic: str) -> Output:
    """The objects.v1 record of a change: the event, or a tombstone carrying the identity in headers."""
    event = change.event
    if change.deleted:
        return Output(objects_topic, event.object_id, None, identity_headers(event))
    return Output(objects_topic, event.object_id, event, identity_headers(event))


def unsupported_error(event: ObjectEvent) -> PermanentError | None:
    """Why an object cannot be indexed, or None when it can."""
    if event.media_kind == MediaKind.MEDIA_KIND_UNSUPPORTED:
        return PermanentError(
            STAGE,
            event.object_id,
            f"unsupported content type for key {event.key!r}",
            "upload text, markdown, PDF/HTML or an image, or extend the router",
        )
    return None
