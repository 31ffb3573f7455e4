"""`mmrag search "text" [--image FILE] [--top-k N] [filters]`: the query service's Search over gRPC, a table or JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from google.protobuf import json_format
from rich.table import Table
from rich.text import Text

from mmrag.grpc_tls import query_channel
from mmrag.pb import query_pb2, query_pb2_grpc
from operator_cli.connection import (
    CommandError,
    OperatorSettings,
    add_json_flag,
    add_token_flag,
    console,
    friendly,
    print_json,
)
from operator_cli.query_filter import add_filter_flags, filter_of


def kind(result: query_pb2.SearchResult) -> str:
    return "+".join(k for k, has in (("text", result.has_text), ("image", result.has_image)) if has) or "-"


def snippet(result: query_pb2.SearchResult, width: int = 90) -> str:
    text = " ".join(result.text.split())
    where = f"p.{result.page} " if result.page else ""
    return where + (text if len(text) <= width else text[: width - 3] + "...")


def search(
    target: str, text: str, image: bytes, top_k: int, timeout_s: float, where: query_pb2.Filter | None = None
) -> query_pb2.SearchResponse:
    query = query_pb2.SearchQuery(text=text, image=image, top_k=top_k, filter=where)
    with query_channel(target) as channel:
        return query_pb2_grpc.QueryServiceStub(channel).Search(query, timeout=timeout_s)


def results_table(reply: query_pb2.SearchResponse) -> Table:
    title = f"{len(reply.results)} hits (space {reply.space_id})"
    if reply.partial:
        title += f" [yellow]partial: shards {list(reply.missing_shards)} did not answer in time"
    table = Table(title=title, title_justify="left")
    for column in ("#", "score", "object", "kind", "snippet"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left")
    for rank, r in enumerate(reply.results, 1):
        table.add_row(str(rank), f"{r.score:.3f}", Text(r.object_id), kind(r), Text(snippet(r)))
    return table


@friendly
def _run(args: argparse.Namespace) -> int:
    settings = OperatorSettings()
    target = args.target or settings.target
    image = b""
    if args.image is not None:
        if not args.image.is_file():
            raise CommandError(f"--image {args.image}: no such file")
        image = args.image.read_bytes()
    if not args.text and not image:
        raise CommandError('give a text, an --image FILE, or both: mmrag search "a red circle" --image circle.png')
    reply = search(target, args.text, image, args.top_k, args.timeout, filter_of(args))
    if args.json:
        print_json(
            json_format.MessageToDict(
                reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
        )
    else:
        console().print(results_table(reply))
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("search", help="search the index (text, image or both) through the query service")
    parser.add_argument("text", nargs="?", default="")
    parser.add_argument("--image", type=Path, help="an image file to search with (alone or with the text)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument(
        "--target", help="the query service's gRPC address (default MMRAG_QUERY_TARGET or 127.0.0.1:MMRAG_GRPC_PORT)"
    )
    add_token_flag(parser)
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    add_filter_flags(parser)
    add_json_flag(parser)
    parser.set_defaults(func=_run)
