"""Topic names (prefix + base + schema version) and their configs; created idempotently."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    base: str
    compacted: bool = False
    partitions: int = 3


SPECS: tuple[TopicSpec, ...] = (
    TopicSpec("s3-events"),
    TopicSpec("objects", compacted=True),
    TopicSpec("embeddings"),
    TopicSpec("vectors", compacted=True),
    TopicSpec("index-status", compacted=True),
    TopicSpec("search.requests"),
    TopicSpec("search.replies", partitions=4),
    TopicSpec("llm.requests"),
    TopicSpec("llm.replies", partitions=4),
    TopicSpec("dlq", partitions=1),
    TopicSpec("backfill-checkpoints", compacted=True, partitions=1),
)


@dataclass(frozen=True)
class Topics:
    """Every topic name of the system under one prefix (tests use a unique prefix each)."""

    prefix: str = ""

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}.v1"

    @property
    def s3_events(self) -> str:
        return self.name("s3-events")

    @property
    def objects(self) -> str:
        return self.name("objects")

    @property
    def embeddings(self) -> str:
        return self.name("embeddings")

    @property
    def vectors(self) -> str:
        return self.name("vectors")

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
    def dlq(self) -> str:
        return self.name("dlq")

    @property
    def backfill_checkpoints(self) -> str:
        return self.name("backfill-checkpoints")


def topic_config(spec: TopicSpec, min_insync: int) -> dict[str, str]:
    config = {"min.insync.replicas": str(min_insync)}
    if spec.compacted:
        # Compaction keeps the latest value per key; tombstones live a day so replays still see deletes.
        config.update({"cleanup.policy": "compact", "delete.retention.ms": "86400000"})
    return config


def ensure_topics(bootstrap_servers: str, topics: Topics, replication: int = 1, vector_shards: int = 2) -> list[str]:
    """Creates missing topics with their configs; existing topics are left as they are. Returns the names created."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    existing = set(admin.list_topics(timeout=15).topics)
    min_insync = 2 if replication >= 3 else 1
    wanted = []
    for spec in SPECS:
        name = topics.name(spec.base)
        partitions = vector_shards if spec.base == "vectors" else spec.partitions
        if name not in existing:
            wanted.append(NewTopic(name, partitions, replication, config=topic_config(spec, min_insync)))
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
    log.info("created topics %s", created)
    return created
