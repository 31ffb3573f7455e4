"""`mmrag`: one entry point for the deployables, the local stack, the demo and the developer tools."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from operator_cli import ask, audit, dlq, eval_export, lag, offsets, search, status, top
from operator_cli.deployables import SERVICE_MODULES
from operator_cli.local_endpoints import NoEndpointError, apply_stack_env, note_default_endpoints, require

_MANAGES_THE_STACK = ("stack", "demo", "kafka", "models")  # they pick their endpoints themselves
_TALKS_TO_A_DEPLOYMENT = ("search", "ask", "status", "lag", "dlq", "offsets", "eval", "reindex", "topics", "audit")


def _run_service(name: str, argv: Sequence[str]) -> int:
    target = SERVICE_MODULES[name]
    spec = importlib.util.find_spec(target)
    is_package = spec is not None and spec.submodule_search_locations is not None
    module = importlib.import_module(f"{target}.__main__" if is_package else target)
    return int(module.main(list(argv)))


def _upload(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from mmrag.object_store import S3ObjectStore
    from mmrag.settings import S3Settings
    from producers.upload import upload_files

    require("MMRAG_S3_ENDPOINT_URL", *([] if args.bucket else ["MMRAG_BUCKET"]))
    bucket = args.bucket or os.environ["MMRAG_BUCKET"]
    settings = S3Settings()
    try:
        uploaded = upload_files(S3ObjectStore(settings, "upload"), bucket, args.files, args.prefix)
    except (BotoCoreError, ClientError) as exc:
        raise NoEndpointError(
            f"the object store at MMRAG_S3_ENDPOINT_URL={settings.s3_endpoint_url} refused the upload ({exc}) -> "
            "check that it runs (`mmrag stack status`) and that the bucket exists"
        ) from exc
    for item in uploaded:
        print(f"s3://{bucket}/{item.key}  {item.size} bytes  etag {item.etag}")
    return 0


def _topics(args: argparse.Namespace) -> int:
    from mmrag.settings import BaseServiceSettings
    from mmrag.topics import ensure_topics

    require("MMRAG_BOOTSTRAP_SERVERS")
    settings = BaseServiceSettings()
    created = ensure_topics(settings.bootstrap_servers, settings.topics, args.replication, args.shards)
    print(f"created {created or 'nothing (all exist)'}")
    return 0


def _proto(args: argparse.Namespace) -> int:
    from local_stack import protogen

    return protogen.main(check=args.proto_command == "check")


def _add_local_tooling(sub: argparse._SubParsersAction) -> None:
    """The local stack's commands; a deployable image ships without the `local_stack` package, so they say so."""
    if importlib.util.find_spec("local_stack") is None:
        for name in ("demo", "kafka", "models", "stack", "bucket"):
            tool = sub.add_parser(name, help="(needs the local stack tooling, not installed here)")
            tool.set_defaults(func=_tooling_missing)
        return
    from local_stack import clip_train, demo, kafka_broker
    from operator_cli import reindex, stack

    demo.register_cli(sub.add_parser("demo", help="set up everything, index a sample corpus, query it"))
    kafka_broker.register_cli(sub.add_parser("kafka", help="fetch jars / start / stop the local Kafka"))
    clip_train.register_cli(sub.add_parser("models", help="create the CLIP models for tests and the demo"))
    stack.register_cli(sub)
    reindex.register_cli(sub)


def _tooling_missing(args: argparse.Namespace) -> int:
    print(
        f"mmrag {args.command}: the local stack tooling (package local_stack, extra `local`) is not installed here; "
        "run it from a checkout after `uv sync` (or `pip install kafka-mmrag[local]`)",
        file=sys.stderr,
    )
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmrag", description=__doc__)
    parser.add_argument(
        "--ca", type=Path, default=None, help="CA (PEM) the query service's TLS certificate chains to: $MMRAG_GRPC_CA"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SERVICE_MODULES:  # dispatched in main() so their own flags (--print-config) pass through
        sub.add_parser(name.replace("_", "-"), help=f"run the {name} deployable (MMRAG_* settings)")
    _add_local_tooling(sub)
    upload = sub.add_parser("upload", help="upload files to the object store (MMRAG_S3_* settings, else the stack)")
    upload.add_argument("files", nargs="+", type=Path)
    upload.add_argument("--bucket", default=None, help="default: $MMRAG_BUCKET (the local stack's bucket)")
    upload.add_argument("--prefix", default="")
    upload.set_defaults(func=_upload)
    topics = sub.add_parser("topics", help="create the topics of docs/architecture.md (idempotent)")
    topics.add_argument(
        "--replication", type=int, default=None, help="replication factor; default min(3, brokers of the cluster)"
    )
    topics.add_argument("--shards", type=int, default=2)
    topics.set_defaults(func=_topics)
    proto = sub.add_parser("proto", help="regenerate or check the protobuf/gRPC code")
    proto.add_argument("proto_command", choices=["generate", "check"])
    proto.set_defaults(func=_proto)
    # the operator commands, each with its own subcommands
    for command in (search, ask, status, lag, dlq, offsets, eval_export, audit, top):
        command.register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in _MANAGES_THE_STACK:
        apply_stack_env()  # unset MMRAG_* endpoints come from a running local stack
        if argv and argv[0] in _TALKS_TO_A_DEPLOYMENT and "--target" not in argv:
            note_default_endpoints()
    if argv and argv[0].replace("-", "_") in SERVICE_MODULES:
        return _run_service(argv[0].replace("-", "_"), argv[1:])
    args = build_parser().parse_args(argv)
    if args.ca is not None:
        os.environ["MMRAG_GRPC_CA"] = str(args.ca)  # every gRPC client of this command talks TLS, trusting it
    try:
        return int(args.func(args))
    except (NoEndpointError, OSError, RuntimeError, ValueError) as exc:  # our errors name the fix: no traceback
        if os.environ.get("MMRAG_DEBUG"):
            raise
        print(f"mmrag {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
