"""`mmrag`: one entry point for the deployables, the local stack, the demo and the developer tools."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from operator_cli.deployables import SERVICE_MODULES


def _run_service(name: str, argv: Sequence[str]) -> int:
    target = SERVICE_MODULES[name]
    spec = importlib.util.find_spec(target)
    is_package = spec is not None and spec.submodule_search_locations is not None
    module = importlib.import_module(f"{target}.__main__" if is_package else target)
    return int(module.main(list(argv)))


def _stack(args: argparse.Namespace) -> int:
    from local_stack.stack import Deployment, start_infra, start_services, stop_infra, stop_services

    if args.stack_command == "down":
        stop_services(args.state_dir)
        stop_infra(args.state_dir)
        print(f"stack under {args.state_dir} stopped")
        return 0
    endpoints = start_infra(args.state_dir, nodes=args.nodes)
    dep = Deployment(state_dir=args.state_dir, endpoints=endpoints, clip_model_dir=args.clip_model_dir)
    dep.prepare()
    start_services(dep.all_services())
    print(
        f"stack up: Kafka {endpoints.bootstrap_servers}, S3 {endpoints.s3_endpoint_url} (bucket {dep.bucket}), "
        f"Milvus {endpoints.milvus_uri}, gRPC 127.0.0.1:{dep.grpc_port}; logs in {args.state_dir / 'logs'}"
    )
    return 0


def _upload(args: argparse.Namespace) -> int:
    from mmrag.object_store import S3ObjectStore
    from mmrag.settings import S3Settings
    from producers.upload import upload_files

    for item in upload_files(S3ObjectStore(S3Settings(), "upload"), args.bucket, args.files, args.prefix):
        print(f"s3://{args.bucket}/{item.key}  {item.size} bytes  etag {item.etag}")
    return 0


def _topics(args: argparse.Namespace) -> int:
    from mmrag.settings import BaseServiceSettings
    from mmrag.topics import ensure_topics

    settings = BaseServiceSettings()
    created = ensure_topics(settings.bootstrap_servers, settings.topics, args.replication, args.shards)
    print(f"created {created or 'nothing (all exist)'}")
    return 0


def _proto(args: argparse.Namespace) -> int:
    from local_stack import protogen

    return protogen.main(check=args.proto_command == "check")


def _add_stack(sub: argparse._SubParsersAction) -> None:
    stack = sub.add_parser("stack", help="start/stop the local stack (Kafka, S3, Milvus, all services)")
    stack.add_argument("stack_command", choices=["up", "down"])
    stack.add_argument("--state-dir", type=Path, default=Path(".mmrag/stack"))
    stack.add_argument("--nodes", type=int, default=1, help="Kafka nodes (3 for fault drills)")
    stack.add_argument("--clip-model-dir", type=Path, default=Path.home() / ".cache/kafka-mmrag/models/clip-easyvqa")
    stack.set_defaults(func=_stack)


def _add_local_tooling(sub: argparse._SubParsersAction) -> None:
    """The local stack's commands; a deployable image ships without the `local_stack` package, so they say so."""
    if importlib.util.find_spec("local_stack") is None:
        for name in ("demo", "kafka", "models", "stack"):
            tool = sub.add_parser(name, help="(needs the local stack tooling, not installed here)")
            tool.set_defaults(func=_tooling_missing)
        return
    from local_stack import clip_train, demo, kafka_broker

    demo.register_cli(sub.add_parser("demo", help="set up everything, index a sample corpus, query it"))
    kafka_broker.register_cli(sub.add_parser("kafka", help="fetch jars / start / stop the local Kafka"))
    clip_train.register_cli(sub.add_parser("models", help="create the CLIP models for tests and the demo"))
    _add_stack(sub)


def _tooling_missing(args: argparse.Namespace) -> int:
    print(
        f"mmrag {args.command}: the local stack tooling (package local_stack, extra `local`) is not installed here; "
        "run it from a checkout after `uv sync` (or `pip install kafka-mmrag[local]`)",
        file=sys.stderr,
    )
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmrag", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SERVICE_MODULES:  # dispatched in main() so their own flags (--print-config) pass through
        sub.add_parser(name.replace("_", "-"), help=f"run the {name} deployable (MMRAG_* settings)")
    _add_local_tooling(sub)
    upload = sub.add_parser("upload", help="upload files to the object store (MMRAG_S3_* settings)")
    upload.add_argument("files", nargs="+", type=Path)
    upload.add_argument("--bucket", required=True)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].replace("-", "_") in SERVICE_MODULES:
        return _run_service(argv[0].replace("-", "_"), argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
