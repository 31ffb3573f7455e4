"""The normalizer's per-object state: the newest change it emitted for each object, and the verdict on a new one.

Order: S3 sequencers when both changes carry one (hex strings; the shorter is right-padded with zeros, as AWS
documents), else event time (moto and backfill send no sequencer; versionIds are not ordered). Identity: a create
of the version the object already holds (versionId, else ETag) is that version again, whatever its event name,
source or time: a multipart upload's `Put` and `CompleteMultipartUpload` twins, a backfill of an announced
object, a replay. The table holds only what was emitted onto objects.v1, so it can be rebuilt from that compacted
topic's headers after a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from producers.s3_events import CREATED, S3Change

# (partition, offset, record index) of the s3-events.v1 record a change came from.
Origin = tuple[int, int, int]


class Verdict(StrEnum):
    EMIT = "emit"
    STALE = "stale"
    DUPLICATE = "duplicate"
    NONCURRENT = "noncurrent-version-delete"


@dataclass(frozen=True)
class Seen:
    """The last change emitted for an object. ``live`` is false after a delete or a rejected (tombstoned) version."""

    version: str
    event_time_ms: int
    sequencer: str
    created: bool
    live: bool
    origin: Origin | None = None  # set only for changes emitted by this process since its last restore
    version_id: str = ""
    etag: str = ""
    readers: tuple[str, ...] | None = None  # the readers emitted with it; None: not known (restored, older record)


def compare_sequencers(a: str, b: str) -> int:
    """-1, 0 or 1 as sequencer ``a`` is older, equal or newer than ``b`` (same object key only)."""
    width = max(len(a), len(b))
    left, right = a.upper().ljust(width, "0"), b.upper().ljust(width, "0")
    return (left > right) - (left < right)


def same_version(change: S3Change, seen: Seen) -> bool:
    """Whether ``change`` names the version ``seen`` holds: versionIds when both carry one, else ETags (a backfill
    lists no versionId; one object's bytes have one ETag), else the version strings (records restored from
    objects.v1 written before the etag/version-id headers)."""
    if change.version_id and seen.version_id:
        return change.version_id == seen.version_id
    if change.etag and seen.etag:
        return change.etag == seen.etag
    return change.version == seen.version


def compare(change: S3Change, seen: Seen) -> int:
    """-1, 0 or 1 as ``change`` happened before, with or after the emitted ``seen``."""
    if change.sequencer and seen.sequencer:
        return compare_sequencers(change.sequencer, seen.sequencer)
    return (change.event_time_ms > seen.event_time_ms) - (change.event_time_ms < seen.event_time_ms)


class ObjectTable:
    """object_id -> Seen, for the partitions this normalizer owns. What a batch records is staged: it becomes the
    table's state only when the batch's transaction commits (``commit``) and is dropped when it aborts (``abort``),
    so the table never holds a change that objects.v1 does not."""

    def __init__(self) -> None:
        self._seen: dict[str, Seen] = {}
        self._staged: dict[str, Seen] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def clear(self) -> None:
        self._seen.clear()
        self._staged.clear()

    @property
    def staged(self) -> int:
        return len(self._staged)

    def commit(self) -> None:
        self._seen.update(self._staged)
        self._staged.clear()

    def abort(self) -> None:
        self._staged.clear()

    def restore(self, headers: Mapping[str, str], key: str | None, tombstone: bool) -> None:
        """Replays one objects.v1 record (its identity headers) into the table."""
        oid = headers.get("object-id") or key
        if not oid:
            return
        if headers.get("readers-only"):  # new readers of the version the object held then, if it still does
            prev = self._seen.get(oid)
            if prev is not None and prev.live and prev.version == headers.get("version", ""):
                self._seen[oid] = replace(prev, readers=tuple(headers.get("readers", "").split()))
            return
        self._seen[oid] = Seen(
            version=headers.get("version", ""),
            event_time_ms=int(headers.get("event-time-ms") or 0),
            sequencer=headers.get("sequencer", ""),
            created=headers.get("event-name", "").startswith(CREATED),
            live=not tombstone,
            version_id=headers.get("version-id", ""),
            etag=headers.get("etag", ""),
            readers=tuple(headers["readers"].split()) if "readers" in headers else None,
        )

    def seen(self, object_id: str) -> Seen | None:
        """What was emitted last for the object (this batch's staged change first)."""
        return self._staged.get(object_id) or self._seen.get(object_id)

    def record_readers(self, object_id: str, readers: tuple[str, ...]) -> None:
        """Stages new readers of the version the object holds (a readers-only record was emitted)."""
        prev = self.seen(object_id)
        if prev is not None:
            self._staged[object_id] = replace(prev, readers=readers)

    def verdict(self, change: S3Change, origin: Origin) -> Verdict:
        """Whether ``change`` is news for objects.v1, and if not, why."""
        prev = self._staged.get(change.object_id) or self._seen.get(change.object_id)
        if prev is None or prev.origin == origin:
            # Never seen, or this very record set it and is handled again (a retry, or a batch whose
            # transaction aborted): what was emitted then is not committed, so emit it again.
            return Verdict.EMIT
        if not change.deleted and prev.created and same_version(change, prev):
            # The version the object holds (or whose rejection it holds) again: one change, however it arrives.
            # After a delete ``prev`` is no create, so a re-upload of the same bytes is news.
            return Verdict.DUPLICATE
        order = compare(change, prev)
        if order < 0:
            return Verdict.STALE
        if order == 0 and change.version == prev.version and (not change.deleted) == prev.created:
            return Verdict.DUPLICATE
        if change.event_name == "ObjectRemoved:Delete" and change.version_id and prev.live:
            # A permanent delete of one version: only the current version's delete removes the object.
            return Verdict.NONCURRENT if prev.version != change.version_id else Verdict.EMIT
        return Verdict.EMIT

    def record(self, change: S3Change, origin: Origin, live: bool, readers: tuple[str, ...] = ()) -> None:
        """Stages what was emitted for ``change`` (``live`` = an ObjectEvent, not a tombstone)."""
        self._staged[change.object_id] = Seen(
            version=change.version,
            event_time_ms=change.event_time_ms,
            sequencer=change.sequencer,
            created=not change.deleted,
            live=live,
            origin=origin,
            version_id=change.version_id,
            etag=change.etag,
            readers=readers,
        )
