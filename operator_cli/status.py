"""`mmrag status s3://bucket/key`: "is it searchable yet", from the query service's GetObjectStatus, with the model
of the space that indexed it; `mmrag status` alone: the embedding spaces (models, rows, which one is live)."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import grpc
from pymilvus.exceptions import MilvusException
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mmrag.grpc_tls import query_channel
from mmrag.milvus_index import milvus_client
from mmrag.pb import query_pb2, query_pb2_grpc
from mmrag.settings import VectorStoreSettings
from operator_cli.connection import (
    CommandError,
    OperatorSettings,
    add_json_flag,
    add_token_flag,
    console,
    format_ms,
    friendly,
    print_json,
)
from operator_cli.spaces import SpaceRow, load_swaps, spaces, spaces_table, swaps_path

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
    with query_channel(target) as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        try:
            return stub.GetObjectStatus(query_pb2.ObjectStatusRequest(object_id=object_id), timeout=timeout_s)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise


def space_models() -> dict[str, str]:
    """Space id -> its CLIP model id (and where it serves), from the collections' specs; {} when Milvus cannot be
    asked (the status still shows the space id)."""
    try:
        rows = _space_rows()
    except (MilvusException, grpc.RpcError, ValueError):  # best effort: the status matters more than the model
        return {}
    return {r.space_id: r.model + (" (live)" if r.live else "") for r in rows if r.spec is not None}


def _space_rows() -> list[SpaceRow]:
    store = VectorStoreSettings()
    client = milvus_client(store.milvus_uri, store.milvus_token.get_secret_value(), timeout_s=2)
    try:
        return spaces(client, store, load_swaps(swaps_path()))
    finally:
        client.close()


def status_table(s: query_pb2.ObjectStatusResponse, models: dict[str, str] | None = None) -> Table:
    table = Table(title=escape(f"s3://{s.object_id}"), title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows = [("version", s.version or "-")]
    if s.space_id:
        model = (models or {}).get(s.space_id)
        rows.append(("embedding space", f"{s.space_id}: {model}" if model else s.space_id))
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
    if args.object is None:
        return _spaces(args)
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
    models = space_models()
    if args.json:
        print_json({**as_dict(found), "space_model": models.get(found.space_id, "")})
    else:
        console().print(status_table(found, models))
    return 0


def _spaces(args: argparse.Namespace) -> int:
    try:
        rows = _space_rows()
    except (MilvusException, grpc.RpcError, ValueError) as exc:
        raise CommandError(f"cannot list the embedding spaces in Milvus ({exc}) -> check MMRAG_MILVUS_URI") from exc
    if args.json:
        print_json([{**asdict(r), "spec": asdict(r.spec) if r.spec else None} for r in rows])
    else:
        console().print(spaces_table(rows, VectorStoreSettings().live_alias))
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "status",
        help="is an object searchable yet (pending, indexed, ...); alone: the embedding spaces and the live one",
    )
    parser.add_argument("object", nargs="?", help="s3://bucket/key (none: list the embedding spaces)")
    parser.add_argument(
        "--target", help="the query service's gRPC address (default MMRAG_QUERY_TARGET or 127.0.0.1:MMRAG_GRPC_PORT)"
    )
    add_token_flag(parser)
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for an object not seen yet")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of the call in seconds")
    add_json_flag(parser)
    parser.set_defaults(func=_run)
