"""Topic names (prefix + base + schema version) and their configs; created idempotently."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from mmrag.kafka_clients import admin_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    base: str
    compacted: bool = False
    partitions: int = 3
    retention_ms: int | None = None  # records older are deleted (with compaction: compact,delete); None = default


SPECS: tuple[TopicSpec, ...] = (
    TopicSpec("s3-events"),
    TopicSpec("objects", compacted=True),
    # the text embedder's heavy lane: objects its light lane forwarded (a work queue, so not compacted)
    TopicSpec("objects.heavy"),
    TopicSpec("embeddings"),
    TopicSpec("vectors", compacted=True),
    # how far each Faiss shard replica applied vectors.v1 (key = replica id): the updater's statuses wait for it
    TopicSpec("vectors.applied", compacted=True, partitions=1, retention_ms=600_000),
    TopicSpec("index-status", compacted=True),
    TopicSpec("search.requests"),
    TopicSpec("search.replies", partitions=4),
    TopicSpec("llm.requests"),
    TopicSpec("llm.replies", partitions=4),
    TopicSpec("dlq", partitions=1),
    TopicSpec("backfill-checkpoints", compacted=True, partitions=1),
    TopicSpec("eval-log"),  # one JSON record per Ask (evaluation + audit), key = request id
    # one JSON record per Search/Ask/GetObjectStatus, allowed or refused (who saw what), key = principal; kept 90 days
    TopicSpec("audit", retention_ms=90 * 24 * 3600 * 1000),
    TopicSpec("object-access", compacted=True),  # last time a query returned each object (TTL by not-accessed)
    # each LLM worker's latest heartbeat (key = worker id); readers need seconds of it, so it is kept 10 minutes
    TopicSpec("llm.heartbeats", compacted=True, partitions=1, retention_ms=600_000),
)


# What one embedding space's stages produce: a re-index space (MMRAG_SPACE_NAME) has its own, so the live space's
# updater never reads another space's embeddings, nor its heavy lane another space's objects; objects.v1 and the
# rest are shared.
SPACE_OWNED = frozenset({"objects.heavy", "embeddings", "vectors", "vectors.applied", "index-status"})


@dataclass(frozen=True)
class Topics:
    """Every topic name of the system under one prefix (tests use a unique prefix each); ``space`` names a
    re-index space's own topics (``<prefix><base>.<space>.v1``), '' = the live space's."""

    prefix: str = ""
    space: str = ""

    def name(self, base: str) -> str:
        if self.space and base in SPACE_OWNED:
            return f"{self.prefix}{base}.{self.space}.v1"
        return f"{self.prefix}{base}.v1"

    @property
    def s3_events(self) -> str:
        return self.name("s3-events")

    @property
    def objects(self) -> str:
        return self.name("objects")

    @property
    def objects_heavy(self) -> str:
        return self.name("objects.heavy")

    @property
    def embeddings(self) -> str:
        return self.name("embeddings")

    @property
    def vectors(self) -> str:
        return self.name("vectors")

    @property
    def vectors_applied(self) -> str:
        return self.name("vectors.applied")

    @property
    def index_status(self) -> str:
        return self.name("index-status")

    @property
    def search_requests(self) -> str:
        return self.name("search.requests")

    @property
    def search_replies(self) -> str:
        return self.name("search.replies")

    @property
    def llm_requests(self) -> str:
        return self.name("llm.requests")

    @property
    def llm_replies(self) -> str:
        return self.name("llm.replies")

    @property
    def llm_heartbeats(self) -> str:
        return self.name("llm.heartbeats")

    @property
    def dlq(self) -> str:
        return self.name("dlq")

    @property
    def backfill_checkpoints(self) -> str:
        return self.name("backfill-checkpoints")

    @property
    def eval_log(self) -> str:
        return self.name("eval-log")

    @property
    def audit(self) -> str:
        return self.name("audit")

    @property
    def object_access(self) -> str:
        return self.name("object-access")


# Largest record of the system (producers' message.max.bytes, topics' max.message.bytes): an EmbeddingBatch at the
# text embedder's chunk cap fits. MMRAG_MAX_MESSAGE_BYTES defaults to it.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def topic_config(spec: TopicSpec, min_insync: int, max_message_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, str]:
    config = {"min.insync.replicas": str(min_insync), "max.message.bytes": str(max_message_bytes)}
    if spec.compacted:
        # Compaction keeps the latest value per key; tombstones live a day so replays still see deletes.
        config.update({"cleanup.policy": "compact", "delete.retention.ms": "86400000"})
    if spec.retention_ms is not None:
        # Segments roll at a tenth of the retention, so records are deleted about when they pass it (a segment is
        # deleted whole, once its newest record is older than the retention).
        retention = str(spec.retention_ms)
        config.update({"retention.ms": retention, "segment.ms": str(spec.retention_ms // 10)})
        if spec.compacted:
            config.update({"cleanup.policy": "compact,delete", "delete.retention.ms": retention})
    return config


def replication_for(brokers: int) -> int:
    """The replication factor of the system's topics on a cluster of ``brokers``: min(3, brokers)."""
    if brokers < 1:
        raise ValueError(f"[topics] a cluster of {brokers} brokers: no topic can be placed -> is the broker up?")
    return min(3, brokers)


def min_insync_for(replication: int) -> int:
    """``min.insync.replicas`` for ``replication``: RF-1 (writes go on with one replica down), 1 at RF 1."""
    return max(1, replication - 1)


def ensure_topics(
    bootstrap_servers: str,
    topics: Topics,
    replication: int | None = None,
    vector_shards: int = 2,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    client: Mapping[str, Any] | None = None,
) -> list[str]:
    """Creates missing topics with their configs; existing topics keep theirs except ``max.message.bytes``, which is
    set to ``max_message_bytes`` (records up to the producers' limit must fit). Returns the names created.

    ``replication`` None = the cluster's own: min(3, brokers), asked from the cluster's metadata. ``client``: more
    admin client settings (a secured cluster's admin credentials) over this process's own."""
    admin = AdminClient(admin_config(bootstrap_servers, **(client or {})))
    metadata = admin.list_topics(timeout=15)
    if replication is None:
        replication = replication_for(len(metadata.brokers))
    existing = set(metadata.topics)
    min_insync = min_insync_for(replication)
    wanted = []
    for spec in SPECS:
        name = topics.name(spec.base)
        partitions = vector_shards if spec.base == "vectors" else spec.partitions
        if name not in existing:
            config = topic_config(spec, min_insync, max_message_bytes)
            wanted.append(NewTopic(name, partitions, replication, config=config))
    _set_max_message_bytes(
        admin, [topics.name(s.base) for s in SPECS if topics.name(s.base) in existing], max_message_bytes
    )
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=30).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise RuntimeError(
                    f"[topics] {name}: create failed ({exc}) -> check the broker at {bootstrap_servers} is up"
                ) from exc
    _wait_visible(admin, created, bootstrap_servers)
    log.info("created topics %s (replication %d, min.insync.replicas %d)", created, replication, min_insync)
    return created


def _set_max_message_bytes(admin: AdminClient, names: list[str], max_message_bytes: int) -> None:
    if not names:
        return
    entry = ConfigEntry("max.message.bytes", str(max_message_bytes), incremental_operation=AlterConfigOpType.SET)
    resources = [ConfigResource("TOPIC", name, incremental_configs=[entry]) for name in names]
    for name, future in admin.incremental_alter_configs(resources).items():
        try:
            future.result()
        except KafkaException as exc:
            raise RuntimeError(f"[topics] {name}: cannot set max.message.bytes ({exc}) -> check the broker") from exc


def _wait_visible(admin: AdminClient, names: list[str], bootstrap_servers: str, timeout_s: float = 15) -> None:
    """Waits until the broker's metadata lists every created topic with a leader for each partition (a created
    topic is not listed at once, and its partitions answer NOT_LEADER_FOR_PARTITION until leaders are elected)."""
    deadline = time.monotonic() + timeout_s

    def ready() -> bool:
        listed = admin.list_topics(timeout=timeout_s).topics
        return all(
            n in listed and listed[n].partitions and all(p.leader >= 0 for p in listed[n].partitions.values())
            for n in names
        )

    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"[topics] created {names} but the broker at {bootstrap_servers} does not list them with leaders "
                f"after {timeout_s:.0f}s -> check the broker's log"
            )
        time.sleep(0.1)
