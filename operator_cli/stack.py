"""`mmrag stack up|down|status|env` and `mmrag bucket connect NAME`: the local stack as a service manager."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from mmrag.settings import default_clip_model_dir

if TYPE_CHECKING:
    from local_stack.stack_status import ProcessStatus

EXIT_NOT_RUNNING = 3  # as `systemctl status` of a stopped unit


def _env_int(name: str) -> int | None:
    return int(os.environ[name]) if os.environ.get(name) else None


def register_cli(sub: argparse._SubParsersAction) -> None:
    from local_stack.state import default_state_dir

    stack = sub.add_parser("stack", help="the local stack: Kafka, S3, Milvus and every service, supervised")
    commands = stack.add_subparsers(dest="stack_command", required=True)
    up = commands.add_parser("up", help="start it (refused while one runs in the state dir)")
    down = commands.add_parser("down", help="stop the supervisor, the services, then the infrastructure")
    status = commands.add_parser("status", help="every process: pid, ports, readiness, restarts, last error line")
    env = commands.add_parser("env", help="print `export MMRAG_...` lines for eval")
    for parser in (up, down, status, env):
        parser.add_argument("--state-dir", type=Path, default=default_state_dir(), help="default: $MMRAG_STATE_DIR")
    up.add_argument("--nodes", type=int, default=1, help="Kafka nodes (3 for fault drills)")
    up.add_argument("--shards", type=int, default=2, help="retrieval shards (a worker per shard and kind)")
    up.add_argument("--clip-model-dir", type=Path, default=default_clip_model_dir())
    up.add_argument("--bucket", default="mmrag-demo", help="bucket created and connected to the queue")
    up.add_argument("--topic-prefix", default="")
    up.add_argument(
        "--index-backend",
        choices=("milvus", "faiss", "both"),
        default=os.environ.get("MMRAG_INDEX_BACKEND") or "faiss",
        help="what the updater writes and which workers serve each shard (Faiss, Milvus or one of each); "
        "default: $MMRAG_INDEX_BACKEND, else faiss (milvus-lite searches linearly; Milvus is for real servers)",
    )
    up.add_argument(
        "--encoder-backend",
        choices=("onnx", "torch"),
        default="onnx",
        help="what runs the new stack's encoders: ONNX Runtime int8 (default: a third to a fifth of torch's CPU a "
        "query or chunk, no measured relevance loss) or torch fp32; part of the space id",
    )
    up.add_argument(
        "--secure",
        action="store_true",
        help="Kafka with SASL_SSL (SCRAM-SHA-512, a CA of the stack's own), ACLs and one user per deployable",
    )
    up.add_argument(
        "--observability",
        action="store_true",
        help="also Jaeger (traces over OTLP) and Prometheus (scraping every service, the alert rules); "
        "needs scripts/build-jaeger.sh (setup) and Debian's prometheus",
    )
    up.add_argument("--services", default="", help="comma-separated subset (e.g. sqs_bridge,normalizer)")
    up.add_argument("--timeout", type=float, default=300, help="seconds to wait for every service to be ready")
    for flag, default_env in (("grpc", "MMRAG_GRPC_PORT"), ("kafka", None), ("s3", None), ("milvus", None)):
        env_name = default_env or f"MMRAG_STACK_{flag.upper()}_PORT"
        up.add_argument(f"--{flag}-port", type=int, default=_env_int(env_name), help=f"default: ${env_name}, else free")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for parser, func in ((up, _up), (down, _down), (status, _status), (env, _env)):
        parser.set_defaults(func=func)
    bucket = sub.add_parser("bucket", help="connect a bucket's events to the pipeline")
    bucket_commands = bucket.add_subparsers(dest="bucket_command", required=True)
    connect = bucket_commands.add_parser("connect", help="send NAME's created/removed events to the SQS queue")
    connect.add_argument("name")
    connect.add_argument("--queue-url", default=None, help="default: $MMRAG_SQS_QUEUE_URL (the stack's queue)")
    connect.set_defaults(func=_bucket_connect)


def _up(args: argparse.Namespace) -> int:
    from local_stack.lifecycle import StackOptions, StackRunningError, stack_up

    options = StackOptions(
        clip_model_dir=args.clip_model_dir,
        nodes=args.nodes,
        shards=args.shards,
        topic_prefix=args.topic_prefix,
        bucket=args.bucket,
        services=tuple(name.strip() for name in args.services.split(",") if name.strip()),
        grpc_port=args.grpc_port,
        kafka_port=args.kafka_port,
        s3_port=args.s3_port,
        milvus_port=args.milvus_port,
        index_backend=args.index_backend,
        encoder_backend=args.encoder_backend,
        observability=args.observability,
        secure=args.secure,
    )
    if not (options.clip_model_dir / "config.json").exists():
        print(
            f"no CLIP model in {options.clip_model_dir} -> create it (`mmrag models train-clip --out "
            f"{options.clip_model_dir}`, or `mmrag models init-clip` for a random one) or pass --clip-model-dir",
            file=sys.stderr,
        )
        return 2
    try:
        record = stack_up(args.state_dir, options, args.timeout)
    except StackRunningError as exc:
        print(exc, file=sys.stderr)
        return 1
    env = record.client_env()
    print(
        f"stack up under {record.state_dir}: {len(record.services)} services ready; Kafka "
        f"{env['MMRAG_BOOTSTRAP_SERVERS']}, S3 {env['MMRAG_S3_ENDPOINT_URL']} (bucket {record.bucket}), Milvus "
        f"{env['MMRAG_MILVUS_URI']}, gRPC {env.get('MMRAG_QUERY_TARGET', '-')}\n"
        f'`mmrag stack status` shows every process; `eval "$(mmrag stack env)"` sets the MMRAG_* variables'
    )
    _print_observability(record.state_dir)
    return 0


def _print_observability(state_dir: str) -> None:
    from local_stack.observability import ObservabilityEndpoints

    found = ObservabilityEndpoints.load(Path(state_dir))
    if found is not None:
        print(
            f"traces: Jaeger {found.jaeger_url} (OTLP in at {found.otlp_http}); metrics and alerts: Prometheus "
            f"{found.prometheus_url}; `mmrag top` for the live view"
        )


def _down(args: argparse.Namespace) -> int:
    from local_stack.lifecycle import stack_down

    stopped = stack_down(args.state_dir)
    print(f"stack under {args.state_dir} {'stopped' if stopped else 'was not running'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from local_stack.stack_status import stack_status

    rows = stack_status(args.state_dir)
    if args.json:
        print(json.dumps([{**asdict(row), "running": row.running} for row in rows], indent=2))
    elif rows:
        _print_table(rows, args.state_dir)
    if not rows:
        print(f"no stack under {args.state_dir} -> `mmrag stack up`", file=sys.stderr)
        return EXIT_NOT_RUNNING
    return 0 if all(row.ready for row in rows) else 1


def _print_table(rows: list[ProcessStatus], state_dir: Path) -> None:
    from local_stack.stack_status import crash_hint

    table = Table(title=f"stack under {state_dir}", title_justify="left")
    for column in ("process", "pid", "ports", "ready", "restarts", "detail / last error line"):
        table.add_column(column)
    for row in rows:
        ready = "[green]ready" if row.ready else ("[red]not running" if row.pid is None else "[yellow]not ready")
        detail = row.last_error or ("" if row.ready else row.detail)
        table.add_row(
            row.name, str(row.pid or "-"), ",".join(map(str, row.ports)), ready, str(row.restarts), detail[:160]
        )
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    for row in rows:
        if not row.ready and (hint := crash_hint(row.name, row.last_exit)):
            print(f"{row.name}: {hint}")


def _env(args: argparse.Namespace) -> int:
    from local_stack.lifecycle import running_processes
    from local_stack.state import StackRecord

    record = StackRecord.load(args.state_dir)
    if record is None or not running_processes(args.state_dir):
        print(f"no stack runs under {args.state_dir} -> `mmrag stack up`", file=sys.stderr)
        return EXIT_NOT_RUNNING
    for key, value in record.client_env().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _bucket_connect(args: argparse.Namespace) -> int:
    from local_stack.s3 import connect_bucket
    from mmrag.object_store import s3_client
    from mmrag.settings import S3Settings
    from operator_cli.local_endpoints import require

    require("MMRAG_S3_ENDPOINT_URL", *([] if args.queue_url else ["MMRAG_SQS_QUEUE_URL"]))
    queue_url = args.queue_url or os.environ["MMRAG_SQS_QUEUE_URL"]
    settings = S3Settings()
    s3 = s3_client(settings)
    if args.name not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        print(f"bucket {args.name} does not exist -> create it first (aws s3 mb s3://{args.name})", file=sys.stderr)
        return 2
    changed = connect_bucket(s3, s3_client(settings, "sqs"), args.name, queue_url)
    print(f"bucket {args.name} {'connected to' if changed else 'already sends its events to'} {queue_url}")
    return 0
