"""`mmrag eval export --jsonl [--since T] [--out FILE]`: the Ask records of eval-log.v1 (question, retrieved ids and
scores, redacted answer, citations, timings, degraded + reason, space, redactions, client, time) as JSON lines, for
offline evaluation and audit; in the order they were asked."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from operator_cli.connection import CommandError, OperatorSettings, friendly, parse_time_ms
from operator_cli.dead_letters import read_records


def json_records(
    bootstrap: str, topic: str, since_ms: int | None, required: tuple[str, ...], what: str
) -> list[dict[str, Any]]:
    """Every JSON object of ``topic`` written at or after ``since_ms``, in topic order. CommandError naming the
    partition and offset of a record that is not JSON or lacks a ``required`` key (not ``what``)."""
    found = []
    for record in read_records(bootstrap, topic):
        if since_ms is not None and record.timestamp_ms < since_ms:
            continue
        try:
            data = json.loads(record.value or b"")
        except ValueError as exc:
            raise CommandError(
                f"{topic}[{record.partition}]@{record.offset} is not JSON ({exc}) -> is MMRAG_TOPIC_PREFIX right?"
            ) from exc
        if not isinstance(data, dict) or not all(key in data for key in required):
            raise CommandError(f"{topic}[{record.partition}]@{record.offset} is not {what}")
        found.append(data)
    return found


def eval_records(bootstrap: str, topic: str, since_ms: int | None = None) -> list[dict[str, Any]]:
    """Every record of ``topic`` asked at or after ``since_ms``, oldest first. CommandError on a record that is not
    an eval-log JSON object (it names the partition and offset)."""
    found = json_records(bootstrap, topic, since_ms, ("request_id",), "an eval-log record")
    return sorted(found, key=lambda d: (d.get("asked_at_ms", 0), d["request_id"]))


def write_jsonl(records: Iterable[dict[str, Any]], out: TextIO) -> int:
    written = 0
    for data in records:
        out.write(json.dumps(data, ensure_ascii=False, sort_keys=True) + "\n")
        written += 1
    return written


@friendly
def _export(args: argparse.Namespace) -> int:
    settings = OperatorSettings()
    since = parse_time_ms(args.since) if args.since else None
    records = eval_records(settings.bootstrap_servers, settings.topics.eval_log, since)
    if args.out is None:
        written = write_jsonl(records, sys.stdout)
    else:
        with Path(args.out).open("w", encoding="utf-8") as out:
            written = write_jsonl(records, out)
    print(f"{written} records from {settings.topics.eval_log}", file=sys.stderr)
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    evaluation = sub.add_parser("eval", help="the Ask evaluation/audit log (eval-log.v1)")
    commands = evaluation.add_subparsers(dest="eval_command", required=True)
    export = commands.add_parser("export", help="the records as JSON lines (stdout or --out)")
    export.add_argument("--jsonl", action="store_true", help="JSON lines, one record a line (the only format)")
    export.add_argument("--since", default=None, help="asked at or after: epoch ms, ISO time, or an age (30m, 2d)")
    export.add_argument("--out", type=Path, default=None, help="write to FILE instead of stdout")
    export.set_defaults(func=_export)
