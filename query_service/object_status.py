"""What "is it searchable yet" answers for one object, from what the status view kept of three topics.

The newest record wins, version by version: an object's current version is its newest ``objects.v1`` record; a
dead letter counts only for that version (or, when the failed input names no version, for a change newer than the
current record), and an index status of that version newer than the failure (a successful replay) overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmrag.pb.events_pb2 import IndexState, IndexStatus
from mmrag.pb.query_pb2 import ObjectStatusResponse

# A rejected version's dead letter and its tombstone are written in one transaction, the dead letter first; a
# version-less dead letter this much older than the objects.v1 record still belongs to it.
SAME_CHANGE_SLACK_MS = 1000
MAX_FAILURES_PER_OBJECT = 20


@dataclass(frozen=True)
class ObjectSeen:
    """The newest objects.v1 record of an object (an event, or a tombstone with its identity headers)."""

    version: str
    live: bool
    rejected: str
    event_time_ms: int
    written_ms: int


@dataclass(frozen=True)
class Failure:
    """One dead letter of an object. ``version`` is None when the failed input does not name one (a raw S3
    notification refused by the normalizer)."""

    version: str | None
    stage: str
    error_class: str
    message: str
    fix: str
    failed_ms: int
    offset: int


@dataclass
class ObjectRecord:
    """Everything the view keeps of one object."""

    seen: ObjectSeen | None = None
    status: IndexStatus | None = None
    failures: list[Failure] = field(default_factory=list)
    readers: tuple[str, ...] = ()  # the newest readers objects.v1 (its ``readers`` header) or the index named

    def visible_to(self, tokens: frozenset[str] | None) -> bool:
        """May a caller with these reader tokens (None: unrestricted) learn anything of this object."""
        return tokens is None or not tokens.isdisjoint(self.readers)

    def add_failure(self, failure: Failure) -> None:
        """Keeps the newest dead letter per (version, stage), at most MAX_FAILURES_PER_OBJECT."""
        kept = [f for f in self.failures if (f.version, f.stage) != (failure.version, failure.stage)]
        self.failures = [*kept, failure][-MAX_FAILURES_PER_OBJECT:]


def resolve(object_id: str, record: ObjectRecord, now_ms: int) -> ObjectStatusResponse | None:
    """The object's state; None when no topic has heard of it."""
    seen = record.seen
    if seen is None:
        failure = _newest(record.failures)
        if failure is not None:
            return _failed(object_id, failure.version or "", failure)
        return _from_index(object_id, record.status) if record.status is not None else None
    failure = _newest(f for f in record.failures if _applies(f, seen))
    if not seen.live:
        return _gone(object_id, seen, record.status, failure)
    status = record.status if record.status is not None and record.status.version == seen.version else None
    if failure is not None and not _recovered(status, failure):
        return _failed(object_id, seen.version, failure, seen.event_time_ms)
    if status is not None and status.state != IndexState.INDEX_STATE_DELETED:
        return _from_index(object_id, status)
    waited_s = max(0, now_ms - seen.written_ms) / 1000
    return ObjectStatusResponse(
        object_id=object_id,
        version=seen.version,
        state="pending",
        event_time_ms=seen.event_time_ms,
        detail=f"announced on objects.v1 {waited_s:.1f}s ago; waiting for the embedders and the index updater",
    )


def _applies(failure: Failure, seen: ObjectSeen) -> bool:
    if failure.version is not None:
        return failure.version == seen.version
    return failure.failed_ms >= seen.written_ms - SAME_CHANGE_SLACK_MS


def _recovered(status: IndexStatus | None, failure: Failure) -> bool:
    """Indexed after it failed: a replay (or another stage's retry) went through."""
    return (
        status is not None
        and status.state == IndexState.INDEX_STATE_INDEXED
        and status.indexed_at_ms > failure.failed_ms
    )


def _newest(failures: object) -> Failure | None:
    return max(failures, key=lambda f: (f.failed_ms, f.offset), default=None)  # type: ignore[call-overload]


def _gone(
    object_id: str, seen: ObjectSeen, status: IndexStatus | None, failure: Failure | None
) -> ObjectStatusResponse:
    """A tombstone: refused by the normalizer (failed), deleted, or a delete the index has not applied yet."""
    if seen.rejected:
        if failure is not None:
            return _failed(object_id, seen.version, failure, seen.event_time_ms)
        return ObjectStatusResponse(
            object_id=object_id, version=seen.version, state="failed", detail=seen.rejected, failed_stage="normalizer"
        )
    if status is not None and status.state == IndexState.INDEX_STATE_DELETED:
        response = _from_index(object_id, status)
        response.event_time_ms = seen.event_time_ms or status.event_time_ms
        return response
    return ObjectStatusResponse(
        object_id=object_id,
        version=seen.version,
        state="pending",
        event_time_ms=seen.event_time_ms,
        detail="deleted in the bucket; the index has not dropped it yet",
    )


def _failed(object_id: str, version: str, failure: Failure, event_time_ms: int = 0) -> ObjectStatusResponse:
    return ObjectStatusResponse(
        object_id=object_id,
        version=version,
        state="failed",
        event_time_ms=event_time_ms,
        detail=failure.message,
        failed_stage=failure.stage,
        error_class=failure.error_class,
        fix=failure.fix,
        dlq_offset=failure.offset,
    )


_STATE_NAMES = {
    IndexState.INDEX_STATE_INDEXED: "indexed",
    IndexState.INDEX_STATE_DELETED: "deleted",
    IndexState.INDEX_STATE_SKIPPED: "skipped",
    IndexState.INDEX_STATE_FAILED: "failed",
    IndexState.INDEX_STATE_EXPIRED: "expired",  # the TTL pruning job removed an old version
}


def _from_index(object_id: str, status: IndexStatus) -> ObjectStatusResponse:
    freshness = max(0, status.indexed_at_ms - status.event_time_ms) if status.event_time_ms else 0
    return ObjectStatusResponse(
        object_id=object_id,
        version=status.version,
        state=_STATE_NAMES.get(status.state, "pending"),
        indexed_at_ms=status.indexed_at_ms,
        space_id=status.space_id,
        event_time_ms=status.event_time_ms,
        freshness_ms=freshness,
        detail=status.detail,
        text_chunks=status.text_chunks,
        image_vectors=status.image_vectors,
    )
