"""The filter flags of `mmrag search` and `mmrag ask`: the gRPC API's `Filter`, checked by the query service (an
invalid one is INVALID_ARGUMENT naming its field, which the command prints)."""

from __future__ import annotations

import argparse

from mmrag.pb import query_pb2
from operator_cli.connection import parse_time_ms


def add_filter_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (all must hold)")
    group.add_argument("--bucket", action="append", default=[], help="only objects of this bucket (repeatable)")
    group.add_argument("--prefix", default="", help="only keys starting with this (within --bucket when given)")
    group.add_argument("--modality", choices=("text", "image"), help="text: with text (OCR too); image: images")
    group.add_argument(
        "--content-type", action="append", default=[], help="only this media type, e.g. text/markdown (repeatable)"
    )
    group.add_argument("--since", help="uploaded at or after: epoch ms, ISO time or an age (30m, 2h, 1d)")
    group.add_argument("--until", help="uploaded before: epoch ms, ISO time or an age")
    group.add_argument("--object", action="append", default=[], help="only this object, bucket/key (repeatable)")


def filter_of(args: argparse.Namespace) -> query_pb2.Filter:
    return query_pb2.Filter(
        buckets=args.bucket,
        key_prefix=args.prefix,
        modality=args.modality or "",
        content_types=args.content_type,
        event_time_from_ms=parse_time_ms(args.since) if args.since else 0,
        event_time_to_ms=parse_time_ms(args.until) if args.until else 0,
        object_ids=args.object,
    )
