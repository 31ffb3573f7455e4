"""Dead-letter records: the original bytes and headers, plus why, where and how often it failed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mmrag.errors import StageError
from mmrag.messages import Output, now_ms

DLQ_PREFIX = "dlq-"


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
    """A DLQ record: the original key, bytes and headers, plus the DLQ headers."""
    merged = dict(headers)
    merged.update(dlq_headers(stage, error, attempts, first_failure_ms, origin))
    return Output(dlq_topic, key, value, merged)
