"""`mmrag audit [--principal P] [--since 1h] [--object B/K] [--json]`: the query service's audit trail (audit.v1),
one record per Search, Ask and GetObjectStatus, allowed or refused: who called what, when, the decision and what was
returned. ``--object`` answers "who saw this document?". `mmrag auth api-key` makes an API key and its file entry."""

from __future__ import annotations

import argparse
import json
import secrets
from pathlib import Path
from typing import Any

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
from operator_cli.eval_export import json_records
from operator_cli.status import object_id_of
from query_service.auth import api_key_hash


def audit_records(bootstrap: str, topic: str, since_ms: int | None = None) -> list[dict[str, Any]]:
    """Every audit record of ``topic`` made at or after ``since_ms``, oldest first; CommandError naming the
    partition and offset of a record that is not one."""
    found = json_records(bootstrap, topic, since_ms, ("method", "decision"), "an audit record")
    return sorted(found, key=lambda d: (d.get("at_ms", 0), d.get("record_id", "")))


def select(records: list[dict[str, Any]], principal: str | None, object_id: str | None) -> list[dict[str, Any]]:
    """The records of ``principal`` (when given) that returned ``object_id`` (when given)."""
    return [
        r
        for r in records
        if (principal is None or r.get("principal") == principal)
        and (object_id is None or any(o.get("object_id") == object_id for o in r.get("returned", ())))
    ]


def audit_table(records: list[dict[str, Any]], object_id: str | None) -> Table:
    title = f"{len(records)} calls" + (f" that returned {object_id}" if object_id else "")
    table = Table(title=title, title_justify="left")
    for column in ("time", "principal", "method", "decision", "status", "returned", "reason / trace"):
        table.add_column(column)
    for r in records:
        returned = r.get("returned", [])
        shown = next((o for o in returned if o.get("object_id") == object_id), None) if object_id else None
        what = f"version {shown.get('version', '')}" if shown else f"{len(returned)} objects"
        style = "green" if r["decision"] == "allow" else "red"
        table.add_row(
            format_ms(int(r.get("at_ms", 0))),
            Text(r.get("principal") or "(unauthenticated)"),
            r["method"],
            Text(r["decision"], style=style),
            r.get("status", ""),
            what,
            Text(r.get("reason") or r.get("trace_id", "")),
        )
    return table


@friendly
def _audit(args: argparse.Namespace) -> int:
    settings = OperatorSettings()
    since = parse_time_ms(args.since) if args.since else None
    object_id = object_id_of(args.object) if args.object else None
    records = select(audit_records(settings.bootstrap_servers, settings.topics.audit, since), args.principal, object_id)
    if args.json:
        print_json(records)
    else:
        console().print(audit_table(records, object_id))
    return 0


@friendly
def _api_key(args: argparse.Namespace) -> int:
    key = f"mmrag_{secrets.token_urlsafe(32)}"
    entry = {
        "sha256": api_key_hash(key),
        "principal": args.principal,
        "groups": [g for g in args.groups.split(",") if g],
        "roles": [r for r in args.roles.split(",") if r],
    }
    if args.file is not None:
        entries = json.loads(args.file.read_text()) if args.file.exists() else []
        if not isinstance(entries, list):
            raise CommandError(f"{args.file} is not a JSON list of API key entries -> give another --file")
        args.file.write_text(json.dumps([*entries, entry], indent=1) + "\n")
    else:
        print_json(entry)
    print(key)  # the only time the key is shown: only its hash is stored
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="who called what and saw which documents (audit.v1)")
    audit.add_argument("--principal", default=None, help="only this caller's calls")
    audit.add_argument("--since", default=None, help="at or after: epoch ms, ISO time, or an age (30m, 2h, 1d)")
    audit.add_argument("--object", default=None, help="only calls that returned s3://bucket/key: who saw it")
    add_json_flag(audit)
    audit.set_defaults(func=_audit)
    auth = sub.add_parser("auth", help="query service credentials")
    commands = auth.add_subparsers(dest="auth_command", required=True)
    key = commands.add_parser("api-key", help="a new API key (printed once) and its hashed entry")
    key.add_argument("--principal", required=True)
    key.add_argument("--groups", default="", help="comma-separated groups, e.g. finance,staff")
    key.add_argument("--roles", default="search,ask", help="comma-separated roles: search, ask")
    key.add_argument("--file", type=Path, default=None, help="append the entry to this MMRAG_AUTH_API_KEYS_FILE")
    key.set_defaults(func=_api_key)
