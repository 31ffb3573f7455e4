"""`mmrag lag`: every consumer group of the deployment, lag per partition and in total, members and state.

Lag is what a read_committed consumer still has to read: records between the committed offset and the last stable
offset (LSO). Offsets alone overcount on transactional topics: every transaction ends with a commit marker that
takes an offset but is never delivered, so a group that read everything commits the marker's offset and the LSO
is one past it (Kafka's own tool shows lag 1 per partition). Small gaps are therefore counted by reading them
(read_committed: markers and aborted records are skipped); gaps over ``EXACT_UP_TO`` are reported as offsets.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import OffsetSpec
from rich.table import Table
from rich.text import Text

from mmrag.kafka_clients import consumer_config
from operator_cli.connection import OperatorSettings, add_json_flag, console, friendly, print_json
from operator_cli.group_offsets import GroupOffsets, Partition, end_offsets, project_groups

EXACT_UP_TO = 1000
COUNT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int
    exact: bool

    @property
    def markers(self) -> int:
        """Offsets in the gap that are not records (transaction markers, aborted records)."""
        start = self.committed if self.committed is not None else self.end - self.lag
        return max(0, self.end - start - self.lag)


@dataclass(frozen=True)
class GroupLag:
    group: str
    state: str
    members: list[dict[str, object]]
    partitions: list[PartitionLag]

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)


def count_records(bootstrap: str, gaps: Mapping[Partition, tuple[int, int]], timeout_s: float) -> dict[Partition, int]:
    """Records a read_committed consumer gets in [start, end) per partition; partitions not read to ``end`` within
    ``timeout_s`` are left out (the caller falls back to offsets)."""
    if not gaps:
        return {}
    config = consumer_config(bootstrap, f"mmrag-lag-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True})
    consumer = Consumer(config)  # assigned, never joined nor committed: the group leaves no trace
    counts = dict.fromkeys(gaps, 0)
    pending = set(gaps)
    try:
        consumer.assign([TopicPartition(t, p, start) for (t, p), (start, _) in gaps.items()])
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            where = (str(msg.topic()), int(msg.partition() or 0))
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(where)
                continue
            offset = int(msg.offset() or 0)
            if where in pending and offset < gaps[where][1]:
                counts[where] += 1
            if offset + 1 >= gaps[where][1]:
                pending.discard(where)
    finally:
        consumer.close()
    return {tp: n for tp, n in counts.items() if tp not in pending}


def group_lags(settings: OperatorSettings, only: str | None = None) -> list[GroupLag]:
    """The deployment's groups with their lag, by group name."""
    admin = settings.admin()
    groups = project_groups(admin, settings.project_topics(), only, settings.topic_prefix)
    partitions = {tp for g in groups for tp in g.committed}
    ends = end_offsets(admin, partitions)
    starts = end_offsets(
        admin, [tp for g in groups for tp, c in g.committed.items() if c is None], OffsetSpec.earliest()
    )
    gaps = {}
    for g in groups:
        for tp, committed in g.committed.items():
            start = committed if committed is not None else starts[tp]
            if 0 < ends[tp] - start <= EXACT_UP_TO:
                gaps[(g.group, tp)] = (start, ends[tp])
    counted = _count_per_group(settings.bootstrap_servers, gaps)
    return [_group_lag(g, ends, starts, counted) for g in groups]


def _count_per_group(
    bootstrap: str, gaps: Mapping[tuple[str, Partition], tuple[int, int]]
) -> dict[tuple[str, Partition], int]:
    """Counts each distinct (partition, start, end) once, however many groups share it."""
    distinct: dict[tuple[Partition, int, int], None] = {(tp, s, e): None for (_, tp), (s, e) in gaps.items()}
    counted: dict[tuple[Partition, int, int], int] = {}
    by_start: dict[Partition, list[tuple[int, int]]] = {}
    for tp, s, e in distinct:
        by_start.setdefault(tp, []).append((s, e))
    while any(by_start.values()):
        batch = {tp: ranges.pop() for tp, ranges in by_start.items() if ranges}
        for tp, n in count_records(bootstrap, batch, COUNT_TIMEOUT_S).items():
            counted[(tp, *batch[tp])] = n
    return {(g, tp): counted[(tp, s, e)] for (g, tp), (s, e) in gaps.items() if (tp, s, e) in counted}


def _group_lag(
    g: GroupOffsets,
    ends: Mapping[Partition, int],
    starts: Mapping[Partition, int],
    counted: Mapping[tuple[str, Partition], int],
) -> GroupLag:
    rows = []
    for tp, committed in sorted(g.committed.items()):
        start = committed if committed is not None else starts[tp]
        gap = max(0, ends[tp] - start)
        exact = counted.get((g.group, tp))
        rows.append(
            PartitionLag(
                tp[0], tp[1], committed, ends[tp], gap if exact is None else exact, exact is not None or gap == 0
            )
        )
    members: list[dict[str, object]] = [
        {"client_id": m.client_id, "host": m.host, "partitions": [list(tp) for tp in m.partitions]} for m in g.members
    ]
    return GroupLag(g.group, g.state, members, rows)


def lag_table(groups: list[GroupLag]) -> Table:
    table = Table(title="consumer lag (read_committed: transaction markers are not lag)", title_justify="left")
    for column in ("group", "state", "members", "topic", "partition", "committed", "end", "lag"):
        table.add_column(column, justify="right" if column in ("partition", "committed", "end", "lag") else "left")
    for g in groups:
        for i, p in enumerate(g.partitions):
            head = (g.group, g.state, str(len(g.members))) if i == 0 else ("", "", "")
            committed = "-" if p.committed is None else str(p.committed)
            lag = str(p.lag) if p.exact else f"~{p.lag}"
            table.add_row(*map(Text, (*head, p.topic, str(p.partition), committed, str(p.end), lag)))
        table.add_row("", "", "", "", "", "", "[bold]total", f"[bold]{g.total}", end_section=True)
    return table


def as_json(groups: list[GroupLag]) -> dict[str, object]:
    return {
        "groups": [
            {
                "group": g.group,
                "state": g.state,
                "members": g.members,
                "total_lag": g.total,
                "partitions": [{**asdict(p), "markers": p.markers} for p in g.partitions],
            }
            for g in groups
        ]
    }


@friendly
def _run(args: argparse.Namespace) -> int:
    settings = OperatorSettings()
    groups = group_lags(settings, args.group)
    if args.json:
        print_json(as_json(groups))
    elif not groups:
        print(f"no consumer group has offsets on the topics under prefix {settings.topic_prefix!r}")
    else:
        console().print(lag_table(groups))
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("lag", help="lag of every consumer group of the deployment (MMRAG_TOPIC_PREFIX)")
    parser.add_argument("--group", help="only this group")
    add_json_flag(parser)
    parser.set_defaults(func=_run)
