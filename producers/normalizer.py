"""The object normalizer: s3-events.v1 -> objects.v1, the single writer per object (group `object-normalizer`).

Every source (SQS bridge, webhook, backfill, MinIO/Ceph publishing to Kafka) only publishes raw changes onto
s3-events.v1; this stage decides what reaches objects.v1, consume-transform-produce in one Kafka transaction per
batch. It keeps the newest change it emitted per object (restored from the compacted objects.v1 on assignment) and
emits only news: duplicates, stale (out-of-order) changes and deletes of non-current versions are counted and
logged, never emitted. A create is checked against the bucket allow-list and the size limit, then sniffed from its
first bytes (a ranged GET); an object that cannot be indexed goes to the DLQ and its key gets a tombstone, so the
index never keeps serving an older version of it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter
from pydantic import Field, field_validator

from mmrag import metrics
from mmrag.changelog import ChangelogReader, LoggedRecord
from mmrag.dlq import Origin as DlqOrigin
from mmrag.dlq import dead_letter
from mmrag.errors import PermanentError
from mmrag.kafka_clients import key_partition
from mmrag.messages import Envelope, Output
from mmrag.object_store import ObjectMissingError, S3ObjectStore
from mmrag.pb.events_pb2 import ObjectEvent
from mmrag.runner import ItemResult, StageRunner
from mmrag.service import service_main
from mmrag.settings import BaseServiceSettings, S3Settings
from mmrag.telemetry import Probes
from mmrag.vector_index import reader_tokens
from producers.content_sniffing import SNIFF_BYTES, sniff
from producers.object_table import ObjectTable, Origin, Seen, Verdict
from producers.s3_events import CREATED, S3Change, parse_notification

log = logging.getLogger(__name__)
STAGE = "normalizer"

SKIPPED = Counter(
    "mmrag_object_changes_skipped_total", "Changes not emitted onto objects.v1, by reason", ["stage", "reason"]
)
EMITTED = Counter("mmrag_object_changes_emitted_total", "objects.v1 records emitted, by kind", ["stage", "kind"])


class NormalizerSettings(BaseServiceSettings, S3Settings):
    group: str = "object-normalizer"
    allowed_buckets: str = Field(default="", description="comma-separated bucket allow-list; empty = every bucket")
    max_object_bytes: int = Field(default=100 * 1024 * 1024, ge=1, description="larger objects go to the DLQ")
    sniff_bytes: int = Field(default=SNIFF_BYTES, ge=16, description="bytes read to sniff the content type")
    readers_tag: str = Field(
        default="mmrag-readers",
        description="the object tag naming who may read an object: reader tokens user:<principal> group:<name>",
    )
    default_readers: str = Field(
        default="",
        description="the readers of an object without that tag; empty (the default) = nobody but unrestricted "
        "callers (auth off): an untagged object is private, never public by accident",
    )

    @field_validator("default_readers")
    @classmethod
    def _tokens(cls, value: str) -> str:
        reader_tokens(value)  # raises naming the bad token
        return value

    @property
    def bucket_allow_list(self) -> frozenset[str]:
        return frozenset(b.strip() for b in self.allowed_buckets.split(",") if b.strip())


@dataclass(frozen=True)
class RawChanges:
    """One s3-events.v1 record: its bytes as published and the changes parsed from them."""

    raw: bytes
    changes: list[S3Change]


def decode_changes(raw: bytes | None, headers: Mapping[str, str]) -> RawChanges:
    """The s3-events.v1 decoder; a malformed body raises PermanentError and the runner sends it to the DLQ."""
    source = f"s3-events ({headers.get('source') or 'kafka'})"
    if raw is None:
        raise PermanentError(STAGE, source, "record without a value", "publish S3 notification JSON")
    return RawChanges(raw, parse_notification(raw, source))


class PrefixReader(Protocol):
    def read_prefix(self, bucket: str, key: str, length: int, version_id: str = "") -> bytes: ...

    def tags(self, bucket: str, key: str) -> dict[str, str]: ...


class Changelog(Protocol):
    def partition_count(self, topic: str) -> int: ...

    def read(self, topic: str, partitions: Sequence[int]) -> Iterable[LoggedRecord]: ...


class Normalizer:
    """The handler: one verdict per change, outputs on objects.v1 (and DLQ records) for the runner's transaction."""

    stage = STAGE

    def __init__(self, settings: NormalizerSettings, store: PrefixReader, changelog: Changelog) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.store = store
        self.changelog = changelog
        self.table = ObjectTable()
        self.allowed = settings.bucket_allow_list
        self.partitions = 0

    def warm_up(self) -> None:
        """Checks the co-partitioning the per-key state relies on: as many s3-events as objects partitions."""
        events = self.changelog.partition_count(self.topics.s3_events)
        objects = self.changelog.partition_count(self.topics.objects)
        if events != objects:
            raise ValueError(
                f"[{STAGE}] {self.topics.s3_events} has {events} partitions, {self.topics.objects} {objects} -> "
                "give both the same count: the normalizer co-partitions them to keep one writer per object"
            )
        self.partitions = events

    def on_assign(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Rebuilds the table from the objects.v1 partitions matching the assigned s3-events.v1 partitions."""
        mine = sorted(p for topic, p in partitions if topic == self.topics.s3_events)
        self.table.clear()
        for record in self.changelog.read(self.topics.objects, mine):
            self.table.restore(record.headers, record.key, record.value is None)
        log.info("%s: restored %d objects from %s partitions %s", STAGE, len(self.table), self.topics.objects, mine)

    def on_commit(self) -> None:
        """The batch's objects.v1 records are committed: what it decided becomes the table's state."""
        self.table.commit()

    def on_abort(self) -> None:
        """The batch's records were not committed (retry, aborted transaction, back-off): forget its decisions."""
        self.table.abort()

    def handle(self, batch: Sequence[Envelope[RawChanges]]) -> list[ItemResult]:
        """In order: a later change of an object in the batch is judged against an earlier one's outcome."""
        results: list[ItemResult] = []
        for env in batch:
            try:
                results.append(self._normalize(env))
            except PermanentError as exc:
                results.append(exc)
        return results

    def _normalize(self, env: Envelope[RawChanges]) -> list[Output]:
        if env.value is None:
            raise PermanentError(STAGE, f"offset {env.offset}", "tombstone on s3-events.v1", "publish notifications")
        if not env.value.changes:
            log.info("%s: %s[%d]@%d carried no changes (test event)", STAGE, env.topic, env.partition, env.offset)
        outputs: list[Output] = []
        for index, change in enumerate(env.value.changes):
            outputs += self._change(env, index, change)
        return outputs

    def _change(self, env: Envelope[RawChanges], index: int, change: S3Change) -> list[Output]:
        home = key_partition(change.object_id, self.partitions)
        if home != env.partition:
            # Published under another key (MinIO/Ceph partition their own way): move it to the partition whose
            # owner holds this object's state, so there is one writer per object.
            EMITTED.labels(STAGE, "forwarded").inc()
            return [Output(self.topics.s3_events, change.object_id, change.to_body(), dict(env.headers), home)]
        if self.allowed and change.bucket not in self.allowed:
            if change.tagging:  # its creation was dead-lettered already (moto notifies a put's tags too): one a version
                SKIPPED.labels(STAGE, "bucket-not-allowed").inc()
                log.info("%s: skipped %s of %s: bucket not allowed", STAGE, change.event_name, change.object_id)
                return []
            fix = f"add it to MMRAG_ALLOWED_BUCKETS ({','.join(sorted(self.allowed))}) or stop its notifications"
            return [self._dead_letter(env, PermanentError(STAGE, change.object_id, "bucket not allowed", fix))]
        origin = (env.partition, env.offset, index)
        if change.tagging:
            return self._readers_changed(env, change)
        verdict = self.table.verdict(change, origin)
        if verdict == Verdict.DUPLICATE and not change.deleted:  # the same bytes again: their tags may be new
            readers = self._readers_changed(env, change)
            if readers:
                return readers
        if verdict != Verdict.EMIT:
            SKIPPED.labels(STAGE, verdict.value).inc()
            what = f"{change.event_name} of {change.object_id} ({change.version})"
            log.info("%s: skipped %s: %s", STAGE, what, verdict.value)
            return []
        if change.deleted:
            return [self._emit(change, origin, env, None)]
        return self._created(env, change, origin)

    def _created(self, env: Envelope[RawChanges], change: S3Change, origin: Origin) -> list[Output]:
        limit = self.settings.max_object_bytes
        if change.size > limit:
            fix = "split the object, or raise MMRAG_MAX_OBJECT_BYTES"
            problem = PermanentError(STAGE, change.object_id, f"{change.size} bytes is over the limit of {limit}", fix)
            return [self._dead_letter(env, problem), self._emit(change, origin, env, None, problem)]
        try:
            head = self.store.read_prefix(change.bucket, change.key, self.settings.sniff_bytes, change.version_id)
        except ObjectMissingError:
            SKIPPED.labels(STAGE, "gone").inc()
            log.info("%s: %s is gone from the store; its delete or overwrite event follows", STAGE, change.object_id)
            return []
        sniffed = sniff(head, change.key)
        if not sniffed.supported:
            reason = f"unsupported content type: {sniffed.reason}"
            problem = PermanentError(STAGE, change.object_id, reason, sniffed.fix)
            return [self._dead_letter(env, problem), self._emit(change, origin, env, None, problem)]
        try:
            readers = self._readers(change)
        except ObjectMissingError:
            SKIPPED.labels(STAGE, "gone").inc()
            return []
        except PermanentError as problem:
            return [self._dead_letter(env, problem), self._emit(change, origin, env, None, problem)]
        event = change.to_event(env.headers.get("source") or "kafka", sniffed.media_kind, sniffed.content_type)
        event.readers[:] = readers
        return [self._emit(change, origin, env, event, readers=readers)]

    def _readers(self, change: S3Change) -> tuple[str, ...]:
        """The object's readers: its readers tag, else MMRAG_DEFAULT_READERS. Raises PermanentError for a tag
        that is not reader tokens, ObjectMissingError when the object is gone."""
        tag = self.store.tags(change.bucket, change.key).get(self.settings.readers_tag)
        try:
            return reader_tokens(self.settings.default_readers if tag is None else tag)
        except ValueError as exc:
            fix = f"set the {self.settings.readers_tag} tag to tokens like 'group:finance user:alice'"
            raise PermanentError(STAGE, change.object_id, f"bad {self.settings.readers_tag} tag: {exc}", fix) from exc

    def _readers_changed(self, env: Envelope[RawChanges], change: S3Change) -> list[Output]:
        """A tagging event, or the bytes the object holds uploaded again: when its readers changed, a readers-only
        record (the rows' readers are updated, nothing is embedded again). A bad tag leaves it no reader."""
        seen = self.table.seen(change.object_id)
        if seen is None or not seen.live:
            SKIPPED.labels(STAGE, "readers-of-no-object").inc()
            return []
        outputs: list[Output] = []
        try:
            readers = self._readers(change)
        except ObjectMissingError:
            SKIPPED.labels(STAGE, "gone").inc()
            return []
        except PermanentError as problem:
            outputs, readers = [self._dead_letter(env, problem)], ()
        if readers == seen.readers:
            SKIPPED.labels(STAGE, "readers-unchanged").inc()
            return outputs
        self.table.record_readers(change.object_id, readers)
        event = ObjectEvent(
            object_id=change.object_id,
            bucket=change.bucket,
            key=change.key,
            version=seen.version,
            readers=readers,
            readers_only=True,
            event_name=change.event_name,
            event_time_ms=change.event_time_ms,
            source=env.headers.get("source") or "kafka",
        )
        headers = {**seen_headers(change.object_id, seen), "readers": " ".join(readers), "readers-only": "true"}
        EMITTED.labels(STAGE, "readers").inc()
        log.info("%s: readers of %s (%s) are now %s", STAGE, change.object_id, seen.version, " ".join(readers))
        return [*outputs, Output(self.topics.objects, readers_key(change.object_id), event, headers, env.partition)]

    def _emit(
        self,
        change: S3Change,
        origin: Origin,
        env: Envelope[RawChanges],
        event: ObjectEvent | None,
        rejected: PermanentError | None = None,
        readers: tuple[str, ...] | None = None,
    ) -> Output:
        """The objects.v1 record (event, or tombstone when None) on the partition this normalizer owns; the table
        notes it. A tombstone of a rejected version names why in its ``rejected`` header; a tombstone keeps the
        readers the object had (who may still ask for its status)."""
        if readers is None:
            prev = self.table.seen(change.object_id)
            readers = prev.readers if prev is not None and prev.readers is not None else ()
        self.table.record(change, origin, live=event is not None, readers=readers)
        headers = {**change.identity_headers(), "readers": " ".join(readers)}
        if rejected is not None:
            headers["rejected"] = rejected.problem
        EMITTED.labels(STAGE, "tombstone" if event is None else "event").inc()
        return Output(self.topics.objects, change.object_id, event, headers, env.partition)

    def _dead_letter(self, env: Envelope[RawChanges], error: PermanentError) -> Output:
        metrics.DLQ.labels(STAGE).inc()
        log.error("%s: to DLQ %s[%d]@%d: %s", STAGE, env.topic, env.partition, env.offset, error)
        raw = env.value.raw if env.value is not None else None
        origin = DlqOrigin(env.topic, env.partition, env.offset)
        return dead_letter(self.topics.dlq, env.key, raw, env.headers, stage=STAGE, error=error, origin=origin)


def readers_key(object_id: str) -> str:
    """The objects.v1 key of an object's readers-only records: never an object id (no S3 bucket name holds
    ``#``), so compaction keeps the object's last full record beside them (a re-index replays both, in order: the
    normalizer writes them to the object's own partition)."""
    return f"#readers/{object_id}"


def seen_headers(object_id: str, seen: Seen) -> dict[str, str]:
    """The identity headers of what the object holds (as its own record carried them)."""
    return {
        "object-id": object_id,
        "version": seen.version,
        "version-id": seen.version_id,
        "etag": seen.etag,
        "event-time-ms": str(seen.event_time_ms),
        "sequencer": seen.sequencer,
        "event-name": f"{CREATED}:Put",
    }


def build(settings: NormalizerSettings, probes: Probes) -> StageRunner[RawChanges]:
    handler = Normalizer(settings, S3ObjectStore(settings, STAGE), ChangelogReader(settings.bootstrap_servers, STAGE))
    decoders = {settings.topics.s3_events: decode_changes}
    return StageRunner(
        settings, handler, group=settings.group_id(settings.group), decoders=decoders, transactional=True, probes=probes
    )


def main(argv: list[str] | None = None) -> int:
    return service_main(STAGE, NormalizerSettings, build, argv)


if __name__ == "__main__":
    sys.exit(main())
