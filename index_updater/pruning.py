"""TTL pruning (a job): expires from the index the objects not updated, or not returned by any query, for a while.

Objects whose indexed version was not updated for MMRAG_TTL_DAYS, or that no query returned for
MMRAG_TTL_UNACCESSED_DAYS (access times: `index_updater.access`), are deleted from the index through its normal
delete path: a ``deleted`` EmbeddingBatch marked ``expired`` on embeddings.v1, which the index updater applies
like any delete (Milvus rows deleted, vectors.v1 tombstones) with status EXPIRED.

    python -m index_updater.pruning [--ttl-days 30] [--unaccessed-days 90] [--dry-run]

Safe against races: the batch carries the version and event time it expires, so an object updated (or deleted)
after the job looked is left alone by the updater (SKIPPED). The object itself stays in the store and objects.v1;
a new upload indexes it again.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Sequence

from confluent_kafka import Producer
from pydantic import Field

from index_updater.access import ACCESS_GROUP, Accesses, ReplyFold, read_accesses
from mmrag.changelog import ChangelogReader, LoggedRecord
from mmrag.kafka_clients import producer_config
from mmrag.messages import CONTENT_TYPE_PROTOBUF, now_ms
from mmrag.pb.events_pb2 import EmbeddingBatch, IndexState, IndexStatus
from mmrag.service import settings_epilog
from mmrag.settings import BaseServiceSettings
from mmrag.telemetry import setup_logging

log = logging.getLogger(__name__)
STAGE = "ttl_pruning"
DAY_MS = 86_400_000


class PruningSettings(BaseServiceSettings):
    ttl_days: float = Field(default=0.0, ge=0, description="expire objects not updated for this many days; 0 = off")
    ttl_unaccessed_days: float = Field(
        default=0.0,
        ge=0,
        description="expire objects no query returned for this many days (object-access.v1, folded from "
        "search.replies.v1 on each run: run the job more often than that topic's retention); 0 = off",
    )


def latest_statuses(records: Iterable[LoggedRecord]) -> dict[str, IndexStatus]:
    """Per object, its last status that changed the index (SKIPPED ones changed nothing and are passed over)."""
    latest: dict[str, IndexStatus] = {}
    for record in records:
        if record.key is None or record.value is None:
            continue
        status = IndexStatus()
        status.ParseFromString(record.value)
        if status.state != IndexState.INDEX_STATE_SKIPPED:
            latest[record.key] = status
    return latest


def _expiry(oid: str, status: IndexStatus) -> EmbeddingBatch:
    """The delete that expires ``status``'s version (the updater skips it once another version is indexed)."""
    return EmbeddingBatch(
        object_id=oid,
        version=status.version,
        modality=status.modality,
        deleted=True,
        expired=True,
        event_time_ms=status.event_time_ms,
    )


def expiring(statuses: dict[str, IndexStatus], now: int, ttl_days: float) -> list[EmbeddingBatch]:
    """The expiry batches of indexed objects whose version's event time is older than the TTL."""
    cutoff = now - int(ttl_days * DAY_MS)
    return [
        _expiry(oid, s)
        for oid, s in sorted(statuses.items())
        if s.state == IndexState.INDEX_STATE_INDEXED and 0 < s.event_time_ms < cutoff
    ]


def unaccessed(statuses: dict[str, IndexStatus], accesses: Accesses, now: int, days: float) -> list[EmbeddingBatch]:
    """The expiry batches of indexed objects that no query returned for ``days``: neither since they were indexed
    nor since the record of accesses is complete (``accesses.since_ms``)."""
    cutoff = now - int(days * DAY_MS)
    return [
        _expiry(oid, s)
        for oid, s in sorted(statuses.items())
        if s.state == IndexState.INDEX_STATE_INDEXED
        and max(accesses.last.get(oid, 0), s.indexed_at_ms, s.event_time_ms, accesses.since_ms) < cutoff
    ]


def record_accesses(settings: PruningSettings, now: int, dry_run: bool) -> Accesses:
    """Folds the replies since the last run into object-access.v1 (not in a dry run) and returns every access."""
    topics = settings.topics
    stored = read_accesses(settings.bootstrap_servers, topics.object_access)
    fold = ReplyFold(
        settings.bootstrap_servers, topics.search_replies, topics.object_access, settings.group_id(ACCESS_GROUP)
    )
    try:
        new, ends = fold.fold(now)
        if not dry_run:
            fold.write(new, ends)
    finally:
        fold.close()
    log.info("%s: %d objects returned by queries since the last run", STAGE, len(new.last))
    return stored.merge(new)


def prune(settings: PruningSettings, dry_run: bool = False) -> list[str]:
    """Sends the expiry batches (flushed; raises RuntimeError naming the fix when Kafka refused any); returns the
    expired object ids."""
    if settings.ttl_days <= 0 and settings.ttl_unaccessed_days <= 0:
        raise ValueError(
            f"[{STAGE}] MMRAG_TTL_DAYS={settings.ttl_days}, MMRAG_TTL_UNACCESSED_DAYS={settings.ttl_unaccessed_days}: "
            "set a positive number of days for either"
        )
    batches = due_expiries(settings, dry_run)
    if not dry_run and batches:
        send_expiries(settings, batches)
    return [b.object_id for b in batches]


def due_expiries(settings: PruningSettings, dry_run: bool) -> list[EmbeddingBatch]:
    """The expiry batches of both TTLs, one per object (folding the accesses first when not-accessed is on)."""
    topics = settings.topics
    reader = ChangelogReader(settings.bootstrap_servers, STAGE)
    statuses = latest_statuses(reader.read(topics.index_status, range(reader.partition_count(topics.index_status))))
    now = now_ms()
    batches = expiring(statuses, now, settings.ttl_days) if settings.ttl_days > 0 else []
    if settings.ttl_unaccessed_days > 0:
        accesses = record_accesses(settings, now, dry_run)
        named = {b.object_id for b in batches}
        batches += [
            b for b in unaccessed(statuses, accesses, now, settings.ttl_unaccessed_days) if b.object_id not in named
        ]
    return batches


def send_expiries(settings: PruningSettings, batches: list[EmbeddingBatch]) -> None:
    """Produces ``batches`` onto embeddings.v1 (key object_id) and flushes; RuntimeError when any is refused."""
    producer = Producer(producer_config(settings.bootstrap_servers))
    failures: list[str] = []
    headers = {"content-type": CONTENT_TYPE_PROTOBUF, "schema": EmbeddingBatch.DESCRIPTOR.full_name}
    for batch in batches:
        producer.produce(
            settings.topics.embeddings,
            batch.SerializeToString(),
            batch.object_id,
            headers=list(headers.items()),
            on_delivery=lambda err, _msg: failures.append(str(err)) if err else None,
        )
    left = producer.flush(30)
    if left or failures:
        raise RuntimeError(
            f"[{STAGE}] {left} expiry batches undelivered, errors {failures[:3]} -> check Kafka and run the job again"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ttl_pruning",
        description=__doc__.split("\n")[0],
        epilog=settings_epilog(PruningSettings),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ttl-days", type=float, help="overrides MMRAG_TTL_DAYS")
    parser.add_argument("--unaccessed-days", type=float, help="overrides MMRAG_TTL_UNACCESSED_DAYS")
    parser.add_argument("--dry-run", action="store_true", help="list what would expire, send nothing")
    parser.add_argument("--print-config", action="store_true", help="print the settings (secrets masked) and exit")
    args = parser.parse_args(argv)
    given = {"ttl_days": args.ttl_days, "ttl_unaccessed_days": args.unaccessed_days}
    settings = PruningSettings(**{name: value for name, value in given.items() if value is not None})
    if args.print_config:
        print(settings.printable())
        return 0
    setup_logging(settings.log_level)
    expired = prune(settings, args.dry_run)
    for oid in expired:
        print(oid)
    log.info("%s: %d objects %s", STAGE, len(expired), "would expire" if args.dry_run else "expired")
    return 0


if __name__ == "__main__":
    sys.exit(main())
