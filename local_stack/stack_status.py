"""`mmrag stack status`: every process of a local stack with its pid, ports, readiness and last error line."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from local_stack import kafka_broker
from local_stack.processes import alive_pid
from local_stack.services import last_error_line
from local_stack.state import StackRecord
from local_stack.supervisor import PIDFILE, read_status
from mmrag.kafka_security import EXIT_CONFIG


@dataclass
class ProcessStatus:
    """One process of the stack as seen now; ``ready`` is its readiness probe (GET /readyz for services)."""

    name: str
    kind: str
    pid: int | None
    ports: list[int]
    ready: bool
    detail: str = ""
    restarts: int = 0
    last_error: str = ""
    last_exit: str = ""

    @property
    def running(self) -> bool:
        return self.pid is not None


def stack_status(state_dir: Path) -> list[ProcessStatus]:
    """The infrastructure, the supervisor and every recorded service; empty when no stack was started here."""
    record = StackRecord.load(state_dir)
    rows = _infra_status(state_dir)
    if record is None and not any(row.running for row in rows):
        return []  # stopped (or never started): leftovers of an earlier run are no stack
    supervisor = alive_pid(state_dir / PIDFILE)
    if record is not None:
        rows.append(ProcessStatus("supervisor", "supervisor", supervisor, [], supervisor is not None))
        restarts = read_status(state_dir)
        for service in record.services:
            row = _service_status(state_dir, service.name, service.probe_port, service.grpc_port)
            seen = restarts.get(service.name, {})
            row.restarts = int(str(seen.get("restarts", 0)))
            row.last_exit = str(seen.get("last_exit") or "")
            if not row.ready and (hint := crash_hint(service.name, row.last_exit)):
                row.detail = f"{row.detail}; {hint}" if row.detail else hint
            rows.append(row)
    return rows


_NATIVE_CRASHES = ("SIGSEGV", "SIGILL", "SIGBUS", "SIGFPE")
_LLAMA_CPP = (
    "likely llama.cpp built for another CPU (a native build) -> check it with `uv run python -m "
    "consumers.llm_worker.native_build` and rebuild portably: `uv cache clean llama-cpp-python && uv sync --frozen "
    "--reinstall-package llama-cpp-python` (docs/architecture.md 'Natively built parts')"
)


def crash_hint(service: str, last_exit: str) -> str:
    """What a process killed by a crash signal (or refused by a secured broker) most likely means and what to do;
    '' for other exits."""
    if last_exit == f"exit code {EXIT_CONFIG}":
        return f"{last_exit}: the broker refused its credentials, certificate or ACLs -> the log's 'refused by' line"
    signal_name = next((name for name in _NATIVE_CRASHES if name in last_exit), None)
    if signal_name is None:
        return ""
    if service.startswith("llm_worker"):
        return f"{last_exit} in a native library: {_LLAMA_CPP}"
    return (
        f"{last_exit} in a native library: a wheel built for another CPU or a bug in it -> the log's "
        "'Fatal Python error' stack names the library; reinstall it (`uv sync --frozen --reinstall-package NAME`)"
    )


def _infra_status(state_dir: Path) -> list[ProcessStatus]:
    rows = []
    cluster = kafka_broker.load_cluster(state_dir / "kafka")
    for node in cluster.nodes if cluster else []:
        pid = node.pid if node.is_alive() else None
        log = node.dir / "server.log"
        rows.append(
            ProcessStatus(f"kafka-{node.node_id}", "kafka", pid, [node.port], pid is not None and _accepts(node.port))
        )
        rows[-1].last_error = last_error_line(log)
    for name, key in (("s3", "url"), ("milvus", "uri"), ("jaeger", "url"), ("prometheus", "url")):
        pidfile = state_dir / f"{'moto' if name == 's3' else name}.json"  # jaeger, prometheus: --observability
        if not pidfile.exists():
            continue
        url = str(json.loads(pidfile.read_text()).get(key, ""))
        port = int(url.rsplit(":", 1)[-1]) if url else 0
        pid = alive_pid(pidfile)
        rows.append(ProcessStatus(name, name, pid, [port], pid is not None and _accepts(port), url))
        rows[-1].last_error = last_error_line(pidfile.with_suffix(".log"))
    return rows


def _service_status(state_dir: Path, name: str, probe_port: int, grpc_port: int | None) -> ProcessStatus:
    logs = state_dir / "logs"
    pid = alive_pid(logs / f"{name}.pid.json")
    ready, detail = probe_ready(probe_port) if pid is not None else (False, "not running")
    ports = [probe_port] + ([grpc_port] if grpc_port else [])
    return ProcessStatus(name, "service", pid, ports, ready, detail, last_error=last_error_line(logs / f"{name}.log"))


def probe_ready(port: int, timeout_s: float = 2.0) -> tuple[bool, str]:
    """GET /readyz on loopback: (ready, the first line of its answer or why there is none)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout_s) as reply:
            return reply.status == 200, _first_line(reply.read())
    except urllib.error.HTTPError as exc:
        return False, _first_line(exc.read())
    except OSError as exc:
        return False, f"no answer on :{port} ({getattr(exc, 'reason', exc)})"


def _first_line(body: bytes) -> str:
    lines = body.decode(errors="replace").strip().splitlines()
    return " | ".join(lines)[:200] if lines else ""


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
