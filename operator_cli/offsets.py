"""`mmrag offsets reset GROUP --to earliest|latest|TIMESTAMP [--dry-run]`: move a stopped group's committed offsets.

Refused while the group has members: a running member would overwrite the reset with its next commit (and the
transactional stages would commit it inside their next transaction). Only the deployment's topics are touched.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import OffsetSpec
from rich.table import Table
from rich.text import Text

from operator_cli.connection import (
    CommandError,
    OperatorSettings,
    add_json_flag,
    console,
    format_ms,
    friendly,
    parse_time_ms,
    print_json,
)
from operator_cli.group_offsets import Partition, end_offsets, project_groups


@dataclass(frozen=True)
class Move:
    topic: str
    partition: int
    current: int | None
    target: int


def parse_target(text: str) -> tuple[str, OffsetSpec]:
    """``earliest``, ``latest``, or a time (epoch ms, ISO 8601, an age like 2h): the first offset at or after it."""
    if text == "earliest":
        return text, OffsetSpec.earliest()
    if text == "latest":
        return text, OffsetSpec.latest()
    ms = parse_time_ms(text)
    return format_ms(ms), OffsetSpec.for_timestamp(ms)


def plan_reset(
    settings: OperatorSettings, group: str, spec: OffsetSpec, topics: list[str] | None
) -> tuple[str, list[Move]]:
    """The group's full name (``group`` may omit the deployment's prefix) and where each of its partitions would
    move; CommandError while the group has members."""
    admin = settings.admin()
    wanted = settings.project_topics()
    if topics:
        named = {t if t in wanted else settings.topics.name(t) for t in topics}
        unknown = sorted(named - wanted)
        if unknown:
            raise CommandError(f"{unknown} are not topics of this deployment -> name them as `mmrag lag` shows them")
        wanted = named
    found = project_groups(admin, wanted, only=group, prefix=settings.topic_prefix)[0]
    group = found.group
    if found.members:
        hosts = ", ".join(sorted({f"{m.client_id}@{m.host}" for m in found.members}))
        raise CommandError(
            f"group {group!r} has {len(found.members)} active member(s) ({hosts}) -> stop them first (scale the "
            "deployment to 0 or `mmrag stack down`); a running member would overwrite the reset with its next commit"
        )
    partitions: list[Partition] = sorted(found.committed)
    if not partitions:
        raise CommandError(f"group {group!r} has no offsets on {sorted(wanted)} -> nothing to reset")
    targets = end_offsets(admin, partitions, spec)
    latest = end_offsets(admin, [tp for tp in partitions if targets[tp] < 0])
    return group, [
        Move(t, p, found.committed[(t, p)], targets[(t, p)] if targets[(t, p)] >= 0 else latest[(t, p)])
        for t, p in partitions
    ]


def apply_reset(settings: OperatorSettings, group: str, moves: list[Move]) -> None:
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(m.topic, m.partition, m.target) for m in moves])
    admin = settings.admin()  # kept alive until the result: a collected client never completes its futures
    admin.alter_consumer_group_offsets([request], request_timeout=15)[group].result(timeout=30)


def moves_table(group: str, to: str, moves: list[Move], dry_run: bool) -> Table:
    title = f"{'dry run: would reset' if dry_run else 'reset'} group {group} to {to}"
    table = Table(title=title, title_justify="left")
    for column in ("topic", "partition", "current", "target", "change"):
        table.add_column(column, justify="left" if column == "topic" else "right")
    for m in moves:
        current = "-" if m.current is None else str(m.current)
        change = "" if m.current is None else f"{m.target - m.current:+d}"
        table.add_row(Text(m.topic), str(m.partition), current, str(m.target), change)
    return table


@friendly
def _run(args: argparse.Namespace) -> int:
    settings = OperatorSettings()
    to, spec = parse_target(args.to)
    group, moves = plan_reset(settings, args.group, spec, args.topic)
    if not args.dry_run:
        apply_reset(settings, group, moves)
    if args.json:
        print_json({"group": group, "to": to, "dry_run": args.dry_run, "moves": [asdict(m) for m in moves]})
    else:
        console().print(moves_table(group, to, moves, args.dry_run))
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    offsets = sub.add_parser("offsets", help="committed offsets of a consumer group")
    actions = offsets.add_subparsers(dest="offsets_command", required=True)
    reset = actions.add_parser("reset", help="move a stopped group's offsets (refused while it has members)")
    reset.add_argument("group")
    reset.add_argument("--to", required=True, help="earliest | latest | epoch ms | ISO time | age (2h)")
    reset.add_argument("--topic", action="append", help="only this topic (repeatable; base name or full name)")
    reset.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    add_json_flag(reset)
    reset.set_defaults(func=_run)
