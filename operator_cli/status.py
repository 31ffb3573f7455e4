"""`mmrag status s3://bucket/key`: "is it searchable yet", from the query service's GetObjectStatus."""

from __future__ import annotations

import argparse
import time

import grpc
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mmrag.pb import query_pb2, query_pb2_grpc
from operator_cli.connection import (
    CommandError,
    OperatorSettings,
    add_json_flag,
    console,
    format_ms,
    friendly,
    print_json,
)

STATE_STYLE = {
    "indexed": "green",
    "pending": "yellow",
    "skipped": "cyan",
    "failed": "red",
    "deleted": "dim",
    "expired": "dim",
}


def object_id_of(text: str) -> str:
    """``s3://bucket/key`` or ``bucket/key`` as the object id ``bucket/key`` (the key as it is in the bucket)."""
    oid = text.removeprefix("s3://")
    bucket, _, key = oid.partition("/")
    if not bucket or not key:
        raise CommandError(f"{text!r}: give s3://bucket/key (or bucket/key)")
    return oid


def object_status(target: str, object_id: str, timeout_s: float) -> query_pb2.ObjectStatusResponse | None:
    """The status; None when no topic has heard of the object."""
    with grpc.insecure_channel(target) as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        try:
            return stub.GetObjectStatus(query_pb2.ObjectStatusRequest(object_id=object_id), timeout=timeout_s)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise


def status_table(s: query_pb2.ObjectStatusResponse) -> Table:
    table = Table(title=escape(f"s3://{s.object_id}"), title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows = [("version", s.version or "-")]
    if s.space_id:
        rows.append(("embedding space", s.space_id))
    rows += [("event time", format_ms(s.event_time_ms)), ("indexed at", format_ms(s.indexed_at_ms))]
    if s.freshness_ms:
        rows.append(("freshness", f"{s.freshness_ms / 1000:.2f}s from upload to searchable"))
    if s.text_chunks or s.image_vectors:
        rows.append(("vectors", f"{s.text_chunks} text chunks, {s.image_vectors} image"))
    if s.failed_stage:
        rows.append(("failed at", f"{s.failed_stage} ({s.error_class})" if s.error_class else s.failed_stage))
    if s.detail:
        rows.append(("detail", s.detail))
    if s.fix:
        rows.append(("fix", s.fix))
    if s.HasField("dlq_offset"):
        rows.append(("dead letter", f"mmrag dlq show {s.dlq_offset}"))
    table.add_row("state", Text(s.state, style=STATE_STYLE.get(s.state, "")))
    for name, value in rows:
        table.add_row(name, Text(value))
    return table


def as_dict(s: query_pb2.ObjectStatusResponse) -> dict[str, object]:
    """Every field with its plain value (numbers stay numbers); ``dlq_offset`` None unless a failure names one."""
    data = {field.name: getattr(s, field.name) for field in s.DESCRIPTOR.fields}
    data["dlq_offset"] = s.dlq_offset if s.HasField("dlq_offset") else None
    return data


@friendly
def _run(args: argparse.Namespace) -> int:
    target = args.target or OperatorSettings().target
    oid = object_id_of(args.object)
    deadline = time.monotonic() + args.wait
    while True:
        found = object_status(target, oid, args.timeout)
        if found is None and time.monotonic() >= deadline:
            raise CommandError(
                f"{oid} not seen on objects.v1, index-status.v1 or dlq.v1 -> check the key, that the bucket sends "
                "notifications (`mmrag bucket connect`), and MMRAG_TOPIC_PREFIX; a fresh upload may still be on its way"
            )
        if found is not None:
            break
        time.sleep(0.5)
    if args.json:
        print_json(as_dict(found))
    else:
        console().print(status_table(found))
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("status", help="is an object searchable yet: pending, indexed, skipped, failed, deleted")
    parser.add_argument("object", help="s3://bucket/key")
    parser.add_argument(
        "--target", help="the query service's gRPC address (default MMRAG_QUERY_TARGET or 127.0.0.1:MMRAG_GRPC_PORT)"
    )
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for an object not seen yet")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of the call in seconds")
    add_json_flag(parser)
    parser.set_defaults(func=_run)
