"""`mmrag dlq list|show|replay|purge`: browse dead letters, look at one, replay them after a fix, purge old ones."""

from __future__ import annotations

import argparse
import sys

from confluent_kafka import TopicPartition
from rich.markup import escape
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
from operator_cli.dead_letters import DeadLetter, Selection, dead_letter_at, parse_offsets, preview, read_dead_letters
from operator_cli.dlq_replay import Verdict, judge, replay


def selection_of(args: argparse.Namespace) -> Selection:
    first, last = parse_offsets(args.offsets) if args.offsets else (None, None)
    return Selection(
        stage=args.stage,
        error_class=args.error_class,
        since_ms=parse_time_ms(args.since) if args.since else None,
        until_ms=parse_time_ms(args.until) if args.until else None,
        first_offset=first,
        last_offset=last,
        key=args.key,
    )


def summary(d: DeadLetter) -> dict[str, object]:
    return {
        "offset": d.offset,
        "failed_at": format_ms(d.failed_ms),
        "stage": d.stage,
        "error_class": d.error_class,
        "key": d.record.key,
        "version": d.version,
        "attempts": d.attempts,
        "source": d.source_topic,
        "replay_of": d.replay_of or None,
        "message": d.message,
        "fix": d.fix,
    }


def list_table(dead_letters: list[DeadLetter], topic: str) -> Table:
    table = Table(title=f"{topic}: {len(dead_letters)} dead letters", title_justify="left")
    for column in ("offset", "failed at", "stage", "error", "key", "attempts", "message"):
        table.add_column(column, justify="right" if column in ("offset", "attempts") else "left")
    for d in dead_letters:
        attempts = f"{d.attempts} (replay of {d.replay_of})" if d.replay_of else str(d.attempts)
        message = d.message if len(d.message) <= 100 else d.message[:97] + "..."
        cells = (str(d.offset), format_ms(d.failed_ms)[:-5] + "Z", d.stage, d.error_class, d.record.key or "-")
        table.add_row(*map(Text, (*cells, attempts, message)))
    return table


@friendly
def _list(args: argparse.Namespace) -> int:
    settings = OperatorSettings()
    stages: set[str] = set()
    found = read_dead_letters(settings.bootstrap_servers, settings.topics.dlq, selection_of(args), stages)
    if args.json:
        print_json([summary(d) for d in found])
    else:
        console().print(list_table(found, settings.topics.dlq))
    if args.stage and args.stage not in stages:  # a typo, or a stage that never failed: say which ones did
        known = ", ".join(sorted(stages)) or "none"
        note = f"note: no dead letter of stage {args.stage!r}; stages on {settings.topics.dlq}: {known}"
        print(note, file=sys.stderr)
    return 0


@friendly
def _show(args: argparse.Namespace) -> int:
    settings = OperatorSettings()
    d = dead_letter_at(settings.bootstrap_servers, settings.topics.dlq, args.offset, args.partition)
    value = preview(d.record.value, d.record.headers.get("schema", ""))
    if args.json:
        print_json({**summary(d), "headers": d.record.headers, "value": value})
        return 0
    table = Table(
        title=escape(f"{settings.topics.dlq}[{d.record.partition}]@{d.offset}  key {d.record.key}"), show_header=False
    )
    table.add_column("header", style="bold")
    table.add_column("value", overflow="fold")
    for name, text in sorted(d.record.headers.items()):
        shown = format_ms(int(text)) + f" ({text})" if name.endswith("-ms") and text.isdigit() else text
        table.add_row(name, Text(shown))
    table.add_row("value", Text(value))
    console().print(table)
    return 0


def verdicts_table(verdicts: list[Verdict], dry_run: bool) -> Table:
    table = Table(title="dry run: nothing sent" if dry_run else "replay", title_justify="left")
    for column in ("offset", "stage", "key", "to", "verdict"):
        table.add_column(column, justify="right" if column == "offset" else "left")
    for v in verdicts:
        d = v.dead_letter
        verdict = ("would replay" if dry_run else "replayed") if v.replay else f"skipped: {v.reason}"
        table.add_row(*map(Text, (str(d.offset), d.stage, d.record.key or "-", d.source_topic, verdict)))
    return table


@friendly
def _replay(args: argparse.Namespace) -> int:
    settings = OperatorSettings()
    selection = selection_of(args)
    if selection == Selection() and not args.all:
        raise CommandError("say which dead letters: --offsets A-B, --stage, --error-class, --key, --since, or --all")
    found = read_dead_letters(settings.bootstrap_servers, settings.topics.dlq, selection)
    verdicts = judge(settings, found, explicit=selection.by_offsets, again=args.again)
    sent = 0 if args.dry_run else replay(settings, verdicts)
    if args.json:
        rows = [{**summary(v.dead_letter), "replay": v.replay, "reason": v.reason} for v in verdicts]
        print_json({"dry_run": args.dry_run, "replayed": sent, "dead_letters": rows})
    else:
        console().print(verdicts_table(verdicts, args.dry_run))
        chosen = sum(1 for v in verdicts if v.replay)
        print(
            f"{f'{chosen} would be replayed' if args.dry_run else f'{sent} replayed'}, {len(verdicts) - chosen} skipped"
        )
    return 0


@friendly
def _purge(args: argparse.Namespace) -> int:
    settings = OperatorSettings()
    topic = settings.topics.dlq
    admin = settings.admin()
    partitions = sorted(admin.list_topics(topic, timeout=15).topics[topic].partitions)
    before = -1 if args.all else args.before  # -1: up to the high watermark
    what = "every dead letter" if args.all else f"dead letters below offset {before}"
    if not args.yes:
        if not sys.stdin.isatty():
            raise CommandError(f"purging {what} of {topic} cannot be undone -> add --yes")
        if input(f"purge {what} of {topic}? type 'purge': ").strip() != "purge":
            raise CommandError("not confirmed; nothing purged")
    futures = admin.delete_records([TopicPartition(topic, p, before) for p in partitions], request_timeout=30)
    for tp, future in futures.items():
        low = future.result(timeout=60).low_watermark
        print(f"{topic}[{tp.partition}]: records below offset {low} deleted (the purge watermark)")
    return 0


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", help="only this stage (dlq-stage), e.g. normalizer, text_embedder")
    parser.add_argument("--error-class", help="only this error class, e.g. PermanentError")
    parser.add_argument("--since", help="failed at or after: epoch ms, ISO time, or an age (30m, 2h, 1d)")
    parser.add_argument("--until", help="failed before: epoch ms, ISO time, or an age")
    parser.add_argument("--offsets", help="N or A-B (inclusive)")
    parser.add_argument("--key", help="only keys containing this (object ids are bucket/key)")


def register_cli(sub: argparse._SubParsersAction) -> None:
    dlq = sub.add_parser("dlq", help="dead letters: list, show, replay after a fix, purge")
    actions = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = actions.add_parser("list", help="dead letters, filtered by stage, error class, time, offsets, key")
    _add_selection(listing)
    add_json_flag(listing)
    listing.set_defaults(func=_list)
    show = actions.add_parser("show", help="one dead letter with all its headers and its value")
    show.add_argument("offset", type=int)
    show.add_argument("--partition", type=int, default=0)
    add_json_flag(show)
    show.set_defaults(func=_show)
    again = actions.add_parser("replay", help="send selected dead letters back to their source topic, once each")
    _add_selection(again)
    again.add_argument("--all", action="store_true", help="every dead letter not replayed yet")
    again.add_argument("--again", action="store_true", help="also ones replayed before")
    again.add_argument("--dry-run", action="store_true", help="show what would be replayed, send nothing")
    add_json_flag(again)
    again.set_defaults(func=_replay)
    purge = actions.add_parser("purge", help="delete old dead letters (Kafka deletes by offset: a watermark)")
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument("--before", type=int, help="delete every dead letter below this offset")
    which.add_argument("--all", action="store_true", help="delete every dead letter")
    purge.add_argument("--yes", action="store_true", help="do not ask")
    purge.set_defaults(func=_purge)
