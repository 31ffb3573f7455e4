"""TTL pruning (a job): objects whose indexed version was not updated for MMRAG_TTL_DAYS are deleted from the index
through the index's normal delete path: a ``deleted`` EmbeddingBatch marked ``expired`` on embeddings.v1, which the
index updater applies like any delete (Milvus rows deleted, vectors.v1 tombstones) with status EXPIRED.

    python -m index_updater.pruning --ttl-days 30 [--dry-run]

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


def expiring(statuses: dict[str, IndexStatus], now: int, ttl_days: float) -> list[EmbeddingBatch]:
    """The expiry batches of indexed objects whose version's event time is older than the TTL."""
    cutoff = now - int(ttl_days * DAY_MS)
    return [
        EmbeddingBatch(
            object_id=oid,
            version=s.version,
            modality=s.modality,
            deleted=True,
            expired=True,
            event_time_ms=s.event_time_ms,
        )
        for oid, s in sorted(statuses.items())
        if s.state == IndexState.INDEX_STATE_INDEXED and 0 < s.event_time_ms < cutoff
    ]


def prune(settings: PruningSettings, dry_run: bool = False) -> list[str]:
    """Sends the expiry batches (flushed; raises RuntimeError naming the fix when Kafka refused any); returns the
    expired object ids."""
    if settings.ttl_days <= 0:
        raise ValueError(f"[{STAGE}] MMRAG_TTL_DAYS={settings.ttl_days}: set a positive number of days")
    topics = settings.topics
    reader = ChangelogReader(settings.bootstrap_servers, STAGE)
    statuses = latest_statuses(reader.read(topics.index_status, range(reader.partition_count(topics.index_status))))
    batches = expiring(statuses, now_ms(), settings.ttl_days)
    if dry_run or not batches:
        return [b.object_id for b in batches]
    producer = Producer(producer_config(settings.bootstrap_servers))
    failures: list[str] = []
    headers = {"content-type": CONTENT_TYPE_PROTOBUF, "schema": EmbeddingBatch.DESCRIPTOR.full_name}
    for batch in batches:
        producer.produce(
            topics.embeddings,
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
    return [b.object_id for b in batches]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ttl_pruning",
        description=__doc__.split("\n")[0],
        epilog=settings_epilog(PruningSettings),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ttl-days", type=float, help="overrides MMRAG_TTL_DAYS")
    parser.add_argument("--dry-run", action="store_true", help="list what would expire, send nothing")
    parser.add_argument("--print-config", action="store_true", help="print the settings (secrets masked) and exit")
    args = parser.parse_args(argv)
    settings = PruningSettings(**({"ttl_days": args.ttl_days} if args.ttl_days is not None else {}))
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
