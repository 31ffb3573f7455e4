"""Dead-letter records: the original bytes and headers, plus why, where and how often it failed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from mmrag.errors import StageError
from mmrag.messages import Output, now_ms
from mmrag.pb.events_pb2 import EmbeddingBatch, ObjectEvent

DLQ_PREFIX = "dlq-"
# Set by `mmrag dlq replay` on the record it sends back to the source topic: which dead letter it replays, and that
# record's attempts and first failure, so a replay that fails again is dead-lettered with the history carried on.
REPLAY_OF = "replay-of"
REPLAY_PRIOR_ATTEMPTS = "replay-prior-attempts"
REPLAY_FIRST_FAILURE_MS = "replay-first-failure-ms"
# Failed inputs whose own message names the version (objects.v1 records name it in their `version` header too).
_VERSIONED = {m.DESCRIPTOR.full_name: m for m in (EmbeddingBatch, ObjectEvent)}


@dataclass(frozen=True)
class Origin:
    """Where a failed input came from: a Kafka topic/partition/offset, or another source (e.g. an SQS queue)."""

    source: str
    partition: int | None = None
    offset: int | None = None


def dlq_headers(stage: str, error: Exception, attempts: int, first_failure_ms: int, origin: Origin) -> dict[str, str]:
    """The DLQ headers of docs/architecture.md."""
    fix = error.fix if isinstance(error, StageError) else "inspect the error, fix the stage or the input, then replay"
    return {
        f"{DLQ_PREFIX}stage": stage,
        f"{DLQ_PREFIX}error-class": type(error).__name__,
        f"{DLQ_PREFIX}error-message": str(error)[:2000],
        f"{DLQ_PREFIX}fix": fix,
        f"{DLQ_PREFIX}attempts": str(max(attempts, 1)),
        f"{DLQ_PREFIX}first-failure-ms": str(first_failure_ms or now_ms()),
        f"{DLQ_PREFIX}last-failure-ms": str(now_ms()),
        f"{DLQ_PREFIX}source-topic": origin.source,
        f"{DLQ_PREFIX}source-partition": "" if origin.partition is None else str(origin.partition),
        f"{DLQ_PREFIX}source-offset": "" if origin.offset is None else str(origin.offset),
    }


def dead_letter(
    dlq_topic: str,
    key: str | None,
    value: bytes | None,
    headers: Mapping[str, str],
    *,
    stage: str,
    error: Exception,
    origin: Origin,
    attempts: int = 1,
    first_failure_ms: int = 0,
) -> Output:
    """A DLQ record: the original key, bytes and headers, plus the DLQ headers. A replayed input (REPLAY_* headers)
    adds its earlier attempts and keeps its first failure time."""
    merged = dict(headers)
    prior = _int(headers.get(REPLAY_PRIOR_ATTEMPTS))
    first = _int(headers.get(REPLAY_FIRST_FAILURE_MS)) or first_failure_ms
    merged.update(dlq_headers(stage, error, prior + max(attempts, 1), first, origin))
    return Output(dlq_topic, key, value, merged)


def failed_version(value: bytes | None, headers: Mapping[str, str]) -> str | None:
    """The object version a dead letter is about: its identity header, else the failed message's own version
    field; None when the input names none (a raw S3 notification)."""
    if headers.get("version"):
        return headers["version"]
    cls = _VERSIONED.get(headers.get("schema", ""))
    if cls is None or value is None:
        return None
    message = cls()
    try:
        message.ParseFromString(value)
    except DecodeError:
        return None
    return message.version or None


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0
