"""`mmrag stack up|down` as functions: one stack per state dir, started once, its services kept alive by the
supervisor, stopped supervisor first. A second `up` on a running stack refuses (`StackRunningError`) instead of
starting a second set of services."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from local_stack.observability import observe_services, stop_observability
from local_stack.processes import alive_pid, free_port, port_free
from local_stack.stack import Deployment, EncoderBackend, IndexBackend, start_infra, stop_infra, stop_services
from local_stack.stack_status import ProcessStatus, crash_hint, stack_status
from local_stack.state import STACK_FILE, ServiceRecord, StackRecord, stack_lock
from local_stack.supervisor import start_supervisor, stop_supervisor, supervisor_pid

DEFAULT_GRPC_PORT = 50051
CRASH_LOOP_RESTARTS = 3  # `stack up` gives up waiting for a service that crashed this often (1 + 2 + 4 s of backoff)


class StackRunningError(RuntimeError):
    """A stack already runs under the state dir; the message names its processes and what to do."""


@dataclass(frozen=True)
class StackOptions:
    """What `mmrag stack up` starts; a port left None is chosen free (gRPC: 50051 when that is free)."""

    clip_model_dir: Path
    nodes: int = 1
    shards: int = 2
    topic_prefix: str = ""
    bucket: str = "mmrag-demo"
    services: tuple[str, ...] = field(default_factory=tuple)  # empty = every deployable of the stack
    grpc_port: int | None = None
    kafka_port: int | None = None
    s3_port: int | None = None
    milvus_port: int | None = None
    index_backend: IndexBackend = "faiss"  # the updater's MMRAG_INDEX_BACKEND; chooses the shards' workers too
    encoder_backend: EncoderBackend = "onnx"  # a new stack's space: ONNX Runtime int8 on CPU (Embedders)
    observability: bool = False  # Jaeger and Prometheus beside it, every service exporting spans and scraped
    secure: bool = False  # Kafka with SASL_SSL, ACLs and a SCRAM user per deployable


def running_processes(state_dir: Path) -> list[str]:
    """'name (pid N)' of the supervisor and every service of ``state_dir`` that still runs."""
    found = []
    pidfiles = [state_dir / "supervisor.pid.json", *sorted((state_dir / "logs").glob("*.pid.json"))]
    for pidfile in pidfiles:
        pid = alive_pid(pidfile)
        if pid is not None:
            found.append(f"{pidfile.name.removesuffix('.pid.json')} (pid {pid})")
    return found


def stack_up(state_dir: Path, options: StackOptions, ready_timeout_s: float = 300) -> StackRecord:
    """Starts infrastructure, topics, bucket+queue and the supervisor, which starts the services; waits until
    every service is ready. StackRunningError if this state dir runs a stack already; TimeoutError naming the
    services that did not get ready (they keep running: `mmrag stack status`, `mmrag stack down`)."""
    state_dir = state_dir.absolute()
    with stack_lock(state_dir):
        running = running_processes(state_dir)
        if running:
            raise StackRunningError(
                f"a stack already runs under {state_dir}: {', '.join(running)}; nothing started -> "
                f"`mmrag stack status` shows it, `mmrag stack down` stops it"
            )
        # gRPC servers share a port silently (SO_REUSEPORT), so a taken one is refused here; Kafka, the local S3
        # and milvus-lite fail on a taken port by themselves.
        grpc_port = _port(options.grpc_port, "--grpc-port", DEFAULT_GRPC_PORT)
        endpoints = start_infra(
            state_dir, options.nodes, options.kafka_port, options.s3_port, options.milvus_port, options.secure
        )
        dep = Deployment(
            state_dir=state_dir,
            endpoints=endpoints,
            clip_model_dir=options.clip_model_dir,
            topic_prefix=options.topic_prefix,
            bucket=options.bucket,
            shards=options.shards,
            grpc_port=grpc_port,
            index_backend=options.index_backend,
            encoder_backend=options.encoder_backend,
        )
        dep.prepare()
        services = [s for s in dep.all_services() if _selected(s.name, options.services)]
        if options.observability:
            observe_services(state_dir, services)  # before the record: the services' env gets OTEL_* settings
        record = StackRecord(str(state_dir), dep.env(), dep.bucket, [ServiceRecord.of(s) for s in services])
        record.save()
        start_supervisor(state_dir)
    wait_ready(state_dir, ready_timeout_s)
    return record


def _selected(label: str, wanted: tuple[str, ...]) -> bool:
    return not wanted or label in wanted or label.split("-")[0] in wanted


def _port(port: int | None, flag: str, preferred: int | None = None) -> int:
    """``port`` if free (ValueError naming ``flag`` otherwise); None: ``preferred`` when free, else any free one."""
    if port is not None:
        if not port_free(port):
            raise ValueError(f"port {port} ({flag}) is in use -> pick another, or leave {flag} out for a free one")
        return port
    return preferred if preferred is not None and port_free(preferred) else free_port()


def wait_ready(state_dir: Path, timeout_s: float) -> list[ProcessStatus]:
    """Waits until every service of the stack answers /readyz with 200; TimeoutError listing the others."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = [row for row in stack_status(state_dir) if row.kind == "service"]
        waiting = [row for row in rows if not row.ready]
        if not waiting:
            return rows
        if supervisor_pid(state_dir) is None:
            raise RuntimeError(f"the supervisor of {state_dir} stopped -> see {state_dir / 'logs' / 'supervisor.log'}")
        crashing = [row for row in waiting if row.restarts >= CRASH_LOOP_RESTARTS]
        if crashing:
            detail = "; ".join(f"{r.name} ({r.restarts} restarts): {_crash_detail(r)}" for r in crashing)
            raise RuntimeError(
                f"crashing at start: {detail} -> see the logs in {state_dir / 'logs'}; the supervisor keeps "
                "restarting them until `mmrag stack down`"
            )
        if time.monotonic() > deadline:
            detail = "; ".join(f"{r.name}: {r.detail} {r.last_error}".strip() for r in waiting)
            raise TimeoutError(
                f"not ready after {timeout_s:.0f}s: {detail} -> see the logs in {state_dir / 'logs'} "
                "(`mmrag stack status`); `mmrag stack down` stops the stack"
            )
        time.sleep(1)


def _crash_detail(row: ProcessStatus) -> str:
    """A crash signal's hint (what it likely means, what to do) first; else the last error line or probe answer."""
    hint = crash_hint(row.name, row.last_exit)
    return f"{hint} (last error line: {row.last_error or '-'})" if hint else row.last_error or row.detail


def stack_down(state_dir: Path) -> bool:
    """Stops the supervisor first (no restarts while stopping), then the services, then the infrastructure.
    Returns False when nothing was recorded or running there."""
    state_dir = state_dir.absolute()
    with stack_lock(state_dir):
        found = bool(running_processes(state_dir)) or (state_dir / STACK_FILE).exists()
        stop_supervisor(state_dir)
        stop_services(state_dir)
        stop_observability(state_dir)
        stop_infra(state_dir)
        (state_dir / STACK_FILE).unlink(missing_ok=True)
    return found
