"""`mmrag backfill s3://bucket/prefix`: the bulk history of a bucket as changes on s3-events.v1, exactly once.

Lists the prefix (paginated, in key order), publishes one change per object at a configurable rate and commits each
batch together with its checkpoint (the last key, on the compacted `backfill-checkpoints.v1`, key = bucket/prefix)
in ONE Kafka transaction. The transactional id is derived from bucket/prefix, so a restarted backfill fences a
killed one and aborts its open transaction before it reads the checkpoint: whatever a committed transaction sent is
never sent again, and nothing is lost. A finished backfill run again resumes after its last key (new keys only);
`--restart` lists from the start, and the normalizer drops what it had emitted already as duplicates.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

from botocore.exceptions import ClientError
from pydantic import Field
from pyrate_limiter import Duration, Limiter, Rate

from mmrag.changelog import ChangelogReader
from mmrag.messages import Output
from mmrag.object_store import s3_client
from mmrag.service import install_stop_signals
from mmrag.settings import BaseServiceSettings, S3Settings
from mmrag.telemetry import setup_logging
from producers.backfill_progress import BackfillProgress
from producers.event_source import Notification, SourceBatch
from producers.publisher import ChangePublisher
from producers.s3_events import S3Change

log = logging.getLogger(__name__)
STAGE = "backfill"
LIST_PAGE = 1000  # S3's maximum keys per ListObjectsV2 page


class BackfillSettings(BaseServiceSettings, S3Settings):
    backfill_uri: str = Field(default="", description="s3://bucket/prefix to backfill")
    backfill_rate: int = Field(default=0, ge=0, description="events per second; 0 = as fast as Kafka takes them")
    backfill_batch: int = Field(default=500, ge=1, le=5000, description="objects per transaction and checkpoint")
    backfill_restart: bool = Field(default=False, description="ignore the checkpoint and list from the start")

    @property
    def bucket_and_prefix(self) -> tuple[str, str]:
        """(bucket, prefix) of ``backfill_uri``; ValueError naming the fix when it is not s3://bucket[/prefix]."""
        scheme, _, rest = self.backfill_uri.partition("://")
        bucket, _, prefix = rest.partition("/")
        if scheme != "s3" or not bucket:
            raise ValueError(f"backfill target {self.backfill_uri!r} is not s3://bucket/prefix -> pass one")
        return bucket, prefix


@dataclass(frozen=True)
class Checkpoint:
    last_key: str = ""
    emitted: int = 0

    def to_json(self) -> bytes:
        return json.dumps({"last_key": self.last_key, "emitted": self.emitted}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Checkpoint:
        data = json.loads(raw)
        return cls(str(data["last_key"]), int(data["emitted"]))


def listed_change(bucket: str, obj: dict[str, Any]) -> S3Change:
    """A listed object as a created change; its order is LastModified (listings carry no sequencer)."""
    modified: datetime = obj["LastModified"]
    etag = str(obj.get("ETag", "")).strip('"')
    return S3Change(bucket, obj["Key"], "ObjectCreated:Backfill", round(modified.timestamp() * 1000), obj["Size"], etag)


class BackfillSource:
    """The EventSource over a bucket listing; its batches carry their checkpoint for the publisher's transaction."""

    name = "backfill"

    def __init__(self, settings: BackfillSettings, changelog: ChangelogReader, progress: BackfillProgress) -> None:
        self.settings = settings
        self.bucket, self.prefix = settings.bucket_and_prefix
        self.checkpoint_key = f"{self.bucket}/{self.prefix}"
        self.changelog = changelog
        self.progress = progress
        self.batch = min(settings.backfill_batch, settings.backfill_rate or settings.backfill_batch)
        rate = settings.backfill_rate
        self.limiter = Limiter(Rate(rate, Duration.SECOND)) if rate else None
        self.checkpoint = Checkpoint()
        self.emitted_this_run = 0
        self._s3: Any = None
        self._listing: Iterator[dict[str, Any]] = iter(())

    def start(self) -> None:
        self._s3 = s3_client(self.settings)
        if not self.settings.backfill_restart:
            self.checkpoint = self._load_checkpoint()
        remaining = sum(1 for _ in self._list(self.checkpoint.last_key))
        after = self.checkpoint.last_key
        log.info("%s: %s resumes after %r: %d objects left", STAGE, self.checkpoint_key, after, remaining)
        self.progress.start(self.checkpoint.emitted + remaining, self.checkpoint.emitted)
        self._listing = self._list(self.checkpoint.last_key)

    def receive(self) -> SourceBatch | None:
        objects = list(islice(self._listing, self.batch))
        if not objects:
            return None
        if self.limiter is not None:
            self.limiter.try_acquire(STAGE, weight=len(objects))  # blocks: never inside the open transaction
        notes = [Notification(listed_change(self.bucket, obj).to_body(), obj["Key"]) for obj in objects]
        after = Checkpoint(objects[-1]["Key"], self.checkpoint.emitted + len(objects))
        topic = self.settings.topics.backfill_checkpoints
        return SourceBatch(notes, Output(topic, self.checkpoint_key, after.to_json(), partition=0))

    def acknowledge(self, batch: SourceBatch, problems: Sequence[str | None]) -> None:
        assert batch.checkpoint is not None and isinstance(batch.checkpoint.value, bytes)
        self.checkpoint = Checkpoint.from_json(batch.checkpoint.value)
        self.emitted_this_run += len(batch.notifications)
        self.progress.advance(len(batch.notifications))

    def release(self, batch: SourceBatch, reason: str) -> None:
        """The transaction aborted: list again from the last committed checkpoint."""
        after = self.checkpoint.last_key
        log.warning("%s: batch after %r not committed (%s); listing again from there", STAGE, after, reason)
        self._listing = self._list(self.checkpoint.last_key)

    def close(self) -> None:
        self.progress.stop()

    def _load_checkpoint(self) -> Checkpoint:
        found = Checkpoint()
        for record in self.changelog.read(self.settings.topics.backfill_checkpoints, [0]):
            if record.key == self.checkpoint_key and record.value is not None:
                found = Checkpoint.from_json(record.value)
        return found

    def _list(self, after: str) -> Iterator[dict[str, Any]]:
        kwargs = {"Bucket": self.bucket, "Prefix": self.prefix, "PaginationConfig": {"PageSize": LIST_PAGE}}
        if after:
            kwargs["StartAfter"] = after
        for page in self._s3.get_paginator("list_objects_v2").paginate(**kwargs):
            yield from page.get("Contents", [])


def transactional_id(settings: BackfillSettings) -> str:
    """Stable per target: a second backfill of the same bucket/prefix fences the first (one writer per checkpoint)."""
    bucket, prefix = settings.bucket_and_prefix
    return f"{settings.topic_prefix}backfill-{hashlib.sha256(f'{bucket}/{prefix}'.encode()).hexdigest()[:16]}"


def run_backfill(settings: BackfillSettings, stop: threading.Event, progress: BackfillProgress | None = None) -> int:
    """Runs a backfill to its end (or until ``stop``); returns how many objects this run emitted."""
    progress = progress or BackfillProgress(f"backfill {settings.backfill_uri}")
    source = BackfillSource(settings, ChangelogReader(settings.bootstrap_servers, STAGE), progress)
    ChangePublisher(settings, source, STAGE, transactional_id=transactional_id(settings)).run(stop)
    return source.emitted_this_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backfill", description=__doc__.split("\n")[0])
    parser.add_argument("uri", nargs="?", help="s3://bucket/prefix (default: MMRAG_BACKFILL_URI)")
    parser.add_argument("--rate", type=int, help="events per second (default: MMRAG_BACKFILL_RATE, 0 = unlimited)")
    parser.add_argument("--batch", type=int, help="objects per transaction (default: MMRAG_BACKFILL_BATCH)")
    parser.add_argument("--restart", action="store_true", default=None, help="ignore the checkpoint")
    parser.add_argument("--print-config", action="store_true", help="print the settings (secrets masked) and exit")
    args = parser.parse_args(argv)
    given = {"uri": args.uri, "rate": args.rate, "batch": args.batch, "restart": args.restart}
    settings = BackfillSettings(**{f"backfill_{k}": v for k, v in given.items() if v is not None})
    if args.print_config:
        print(settings.printable())
        return 0
    setup_logging(settings.log_level)
    stop = threading.Event()
    install_stop_signals(stop)
    started = time.monotonic()
    try:
        emitted = run_backfill(settings, stop)
    except (ValueError, ClientError) as exc:
        fix = "check the target, the bucket and the credentials"
        print(f"backfill {settings.backfill_uri}: {exc} -> {fix}", file=sys.stderr)
        return 2
    print(f"backfill {settings.backfill_uri}: {emitted} objects emitted in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
