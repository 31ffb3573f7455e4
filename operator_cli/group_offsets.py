"""Consumer groups of one deployment as the cluster sees them: state, members, committed offsets, end offsets.

A group belongs to the deployment when it has committed offsets on one of its topics, or members assigned to one
(group names carry the deployment's topic prefix, `mmrag.settings.group_name`; a command naming a group accepts
the name without the prefix too).
Ends are read_committed (the last stable offset), so an open transaction's records are not counted as lag.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from operator_cli.connection import CommandError

TIMEOUT_S = 15
Partition = tuple[str, int]


@dataclass(frozen=True)
class Member:
    client_id: str
    host: str
    partitions: tuple[Partition, ...]


@dataclass
class GroupOffsets:
    """One group restricted to the deployment's topics: committed offset per partition (None = none yet)."""

    group: str
    state: str
    members: list[Member] = field(default_factory=list)
    committed: dict[Partition, int | None] = field(default_factory=dict)


def list_group_ids(admin: AdminClient) -> list[str]:
    result = admin.list_consumer_groups(request_timeout=TIMEOUT_S).result(timeout=2 * TIMEOUT_S)
    return sorted(g.group_id for g in result.valid)


def describe_groups(admin: AdminClient, group_ids: Iterable[str], topics: set[str]) -> dict[str, GroupOffsets]:
    """State, members (with their assignment on ``topics``) and committed offsets on ``topics`` of each group."""
    ids = list(group_ids)
    if not ids:
        return {}
    described = admin.describe_consumer_groups(ids, request_timeout=TIMEOUT_S)
    metadata = admin.list_topics(timeout=TIMEOUT_S).topics
    partitions = {t: sorted(metadata[t].partitions) for t in topics if t in metadata}
    groups = {}
    for group_id, future in described.items():
        desc = future.result(timeout=2 * TIMEOUT_S)
        members = [_member(m, topics) for m in desc.members]
        committed: dict[Partition, int | None] = {
            tp: off for tp, off in _committed(admin, group_id).items() if tp[0] in topics
        }
        for tp in (tp for member in members for tp in member.partitions):
            committed.setdefault(tp, None)
        # A partition the group never committed is read from the earliest offset when it starts (every consumer
        # here resets to earliest), so its whole content is lag: a stopped group would hide it otherwise.
        for topic in {t for t, _ in committed}:
            for partition in partitions.get(topic, ()):
                committed.setdefault((topic, partition), None)
        groups[group_id] = GroupOffsets(group_id, desc.state.name.lower(), members, committed)
    return groups


def _member(description: Any, topics: set[str]) -> Member:
    assigned = description.assignment.topic_partitions
    mine = tuple(sorted((tp.topic, tp.partition) for tp in assigned if tp.topic in topics))
    return Member(description.client_id, description.host, mine)


def resolve_group(ids: Iterable[str], name: str, prefix: str) -> str:
    """The group ``name`` means among ``ids``: itself, or the deployment's group of that base name
    (``<prefix><name>``, e.g. ``embedder-text`` -> ``demo.embedder-text``); CommandError when neither exists."""
    known = set(ids)
    for candidate in (name, f"{prefix}{name}"):
        if candidate in known:
            return candidate
    also = f" nor {prefix + name!r}" if prefix else ""
    raise CommandError(f"no consumer group {name!r}{also} on this cluster -> `mmrag lag` lists the groups")


def project_groups(
    admin: AdminClient, topics: set[str], only: str | None = None, prefix: str = ""
) -> list[GroupOffsets]:
    """The groups with offsets or members on ``topics``, by name; ``only`` = just that group, named in full or
    without the deployment's ``prefix`` (CommandError when the cluster knows neither)."""
    ids = list_group_ids(admin)
    if only is not None:
        ids = [resolve_group(ids, only, prefix)]
    groups = describe_groups(admin, ids, topics)
    return [g for g in groups.values() if g.committed or only is not None]


def _committed(admin: AdminClient, group: str) -> dict[Partition, int]:
    request = [ConsumerGroupTopicPartitions(group)]
    result = admin.list_consumer_group_offsets(request, require_stable=True, request_timeout=TIMEOUT_S)[group].result(
        timeout=2 * TIMEOUT_S
    )
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions or [] if tp.offset >= 0}


def end_offsets(
    admin: AdminClient, partitions: Iterable[Partition], spec: OffsetSpec | None = None
) -> dict[Partition, int]:
    """Per partition: the last stable offset (read_committed ``latest``), or what ``spec`` names (earliest, a
    timestamp: -1 when no record is that new)."""
    wanted = {TopicPartition(t, p): spec or OffsetSpec.latest() for t, p in set(partitions)}
    if not wanted:
        return {}
    futures = admin.list_offsets(wanted, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=TIMEOUT_S)
    ends = {}
    for tp, future in futures.items():
        try:
            ends[(tp.topic, tp.partition)] = future.result(timeout=2 * TIMEOUT_S).offset
        except KafkaException as exc:
            raise CommandError(
                f"{tp.topic}[{tp.partition}]: end offset unknown ({exc}) -> is the topic there?"
            ) from exc
    return ends
