"""What the Helm chart takes from the code, as plain data: the topic registry (mmrag.topics), each autoscaled
deployable's consumer group and input topic (as its ``__main__`` computes them from its settings) and the Kafka
principals' ACLs (mmrag.access). Names are without the deployment's topic prefix; the chart adds it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmrag.access import DECLARATIONS, Principal, resolve
from mmrag.settings import BaseServiceSettings
from mmrag.topics import MAX_MESSAGE_BYTES, SPACE_OWNED, SPECS, topic_config

# Config keys that depend on the cluster (replication): the chart sets them from its values.
CLUSTER_DEPENDENT = ("min.insync.replicas",)


def topics() -> list[dict[str, Any]]:
    """Every registered topic: its base, partitions (vectors: one per shard, the chart's ``shards``), whether a
    re-index space has its own, and its configs except those that depend on the replication factor."""
    rows = []
    for spec in SPECS:
        config = topic_config(spec, min_insync=1, max_message_bytes=MAX_MESSAGE_BYTES)
        rows.append(
            {
                "base": spec.base,
                "partitions": spec.partitions,
                "partitionsPerShard": spec.base == "vectors",
                "spaceOwned": spec.base in SPACE_OWNED,
                "config": {k: v for k, v in sorted(config.items()) if k not in CLUSTER_DEPENDENT},
            }
        )
    return rows


@dataclass(frozen=True)
class GroupSource:
    """How a deployable's ``__main__`` names its consumer group and input topic from its settings."""

    deployable: str  # the chart's name for it (values.deployables key, or retrieval-shard)
    settings: Callable[[], BaseServiceSettings]
    group: Callable[[Any], str]
    topic: Callable[[Any], str]


def _sources() -> tuple[GroupSource, ...]:
    # Imported here: the deployables' settings modules pull in their handlers' dependencies.
    from consumers.llm_worker.settings import LlmWorkerSettings
    from consumers.retrieval_worker.handler import RetrievalWorkerSettings
    from consumers.text_embedder.handler import TextEmbedderSettings
    from consumers.vision_embedder.handler import VisionEmbedderSettings
    from index_updater.handler import IndexUpdaterSettings
    from producers.normalizer import NormalizerSettings

    return (
        GroupSource("normalizer", NormalizerSettings, lambda s: s.group_id(s.group), lambda s: s.topics.s3_events),
        GroupSource(
            "text-embedder",
            lambda: TextEmbedderSettings(lane="light"),
            lambda s: s.consumer_group(s.lane_group),
            lambda s: s.topics.objects,
        ),
        GroupSource(
            "text-embedder-heavy",
            lambda: TextEmbedderSettings(lane="heavy"),
            lambda s: s.consumer_group(s.lane_group),
            lambda s: s.topics.objects_heavy,
        ),
        GroupSource(
            "vision-embedder", VisionEmbedderSettings, lambda s: s.consumer_group(s.group), lambda s: s.topics.objects
        ),
        GroupSource(
            "index-updater", IndexUpdaterSettings, lambda s: s.consumer_group(s.group), lambda s: s.topics.embeddings
        ),
        GroupSource("llm-worker", LlmWorkerSettings, lambda s: s.group_id(s.group), lambda s: s.topics.llm_requests),
        GroupSource(
            "retrieval-shard",
            lambda: RetrievalWorkerSettings(shard=0),
            lambda s: s.group_id(s.group),
            lambda s: s.topics.search_requests,
        ),
    )


def consumer_groups(topic_prefix: str = "", space_name: str = "") -> dict[str, dict[str, str]]:
    """Per autoscaled deployable: its consumer group and the topic it reads, as the code names them for a deployment
    under ``topic_prefix`` in ``space_name`` (the retrieval shards' group is that of shard 0)."""
    env = {"topic_prefix": topic_prefix, "space_name": space_name}
    found = {}
    for source in _sources():
        settings = source.settings().model_copy(update=env)
        found[source.deployable] = {"group": source.group(settings), "topic": source.topic(settings)}
    return found


def group_bases() -> dict[str, dict[str, str]]:
    """``consumer_groups`` of the live space without a prefix, topics by their registry base (what the chart
    prefixes); the retrieval shards' group as the base ``<group of shard 0>`` minus its shard number."""
    by_name = {f"{spec.base}.v1": spec.base for spec in SPECS}
    rows = {}
    for deployable, row in consumer_groups().items():
        group = row["group"].removesuffix("0") if deployable == "retrieval-shard" else row["group"]
        rows[deployable] = {"group": group, "topic": by_name[row["topic"]]}
    return rows


# Placeholders the chart replaces with its topicPrefix and re-index space (names resolve per deployment).
PREFIX, SPACE = "@PREFIX@", "@SPACE@"


def strimzi_acls(p: Principal) -> list[dict[str, Any]]:
    """``p``'s ACLs as Strimzi ``simple`` authorization rules, the same bindings the secured local stack creates
    (local_stack.secure_kafka.acl_bindings): Read on topics read and on its groups (names and prefixes), Write on
    topics written and its transactional ids, Describe on groups it looks at."""
    rules: dict[tuple[str, str, str], list[str]] = {}

    def allow(kind: str, name: str, pattern: str, operation: str) -> None:
        rules.setdefault((kind, name, pattern), []).append(operation)

    for topic in sorted(p.reads):
        allow("topic", topic, "literal", "Read")
    for topic in sorted(p.writes):
        allow("topic", topic, "literal", "Write")
    for group in sorted(p.groups):
        allow("group", group, "literal", "Read")
    for group in sorted(p.group_prefixes):
        allow("group", group, "prefix", "Read")
    for group in sorted(p.groups_described):
        allow("group", group, "prefix", "Describe")
    if p.transactional_id_prefix is not None:
        allow("transactionalId", p.transactional_id_prefix, "prefix", "Write")
    return [
        {"type": "allow", "resource": {"type": k, "name": n, "patternType": pt}, "operations": ops}
        for (k, n, pt), ops in rules.items()
    ]


def users() -> dict[str, dict[str, Any]]:
    """Per declared principal (mmrag.access, Kubernetes spelling): its ACLs in the live space and with a re-index
    space, names under the PREFIX and SPACE placeholders."""
    return {
        d.name.replace("_", "-"): {
            "live": strimzi_acls(resolve(d, PREFIX)),
            "withSpace": strimzi_acls(resolve(d, PREFIX, SPACE)),
        }
        for d in DECLARATIONS
    }
