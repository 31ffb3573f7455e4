"""Jaeger and Prometheus beside the local stack (`mmrag stack up --observability`).

Jaeger v1.75.0 (built from the Go module proxy by scripts/build-jaeger.sh) runs all-in-one with in-memory storage:
OTLP in (gRPC and HTTP), its query API and UI out. Prometheus (Debian's package) scrapes every service of the stack
from a generated config, labelled ``deployable`` (the module's name) and ``service`` (the stack's process name),
evaluates the rules of deploy/prometheus/rules (or a given rule set) and keeps exemplars (trace ids)."""

from __future__ import annotations

import json
import shutil
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from local_stack.processes import alive_pid, free_port, spawn_detached, stop_detached, wait_until
from local_stack.services import Service
from mmrag.settings import cache_dir

RULES_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules"
OBSERVABILITY_FILE = "observability.json"


@dataclass(frozen=True)
class ObservabilityEndpoints:
    """Where the tracing and metrics backends of a stack answer."""

    otlp_http: str  # OTEL_EXPORTER_OTLP_ENDPOINT for the services (http/protobuf)
    otlp_grpc: str
    jaeger_url: str  # UI and query API (/api/services, /api/traces)
    prometheus_url: str

    def service_env(self) -> dict[str, str]:
        """The OTEL_* settings that make a service export its spans to this Jaeger, quickly (local stack)."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_http,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "500",
        }

    def save(self, state_dir: Path) -> None:
        (state_dir / OBSERVABILITY_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, state_dir: Path) -> ObservabilityEndpoints | None:
        path = state_dir / OBSERVABILITY_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else None


@dataclass(frozen=True)
class ScrapeTarget:
    service: str  # the stack's process name, e.g. retrieval_worker-1
    deployable: str  # its module's short name, e.g. retrieval_worker
    port: int


def jaeger_binary() -> str:
    """The Jaeger program setup built; FileNotFoundError naming the command that builds it."""
    built = cache_dir() / "tools" / "bin" / "jaeger"
    found = str(built) if built.exists() else shutil.which("jaeger")
    if not found:
        raise FileNotFoundError(f"[observability] no Jaeger at {built} -> run `bash scripts/build-jaeger.sh` (setup)")
    return found


def _prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        raise FileNotFoundError("[observability] no prometheus on PATH -> run scripts/setup.sh (Debian's package)")
    return found


def jaeger_config(otlp_grpc: int, otlp_http: int, query_http: int, query_grpc: int, health: int) -> dict[str, Any]:
    """Jaeger v2 all-in-one: OTLP receivers, in-memory storage, the query service; every port on loopback."""
    host = "127.0.0.1"
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["jaeger_storage_exporter"]}
            },
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
        },
        "extensions": {
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"{host}:{health}"}},
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                "http": {"endpoint": f"{host}:{query_http}"},
                "grpc": {"endpoint": f"{host}:{query_grpc}"},
            },
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 100000}}}},
        },
        "receivers": {
            "otlp": {
                "protocols": {"grpc": {"endpoint": f"{host}:{otlp_grpc}"}, "http": {"endpoint": f"{host}:{otlp_http}"}}
            }
        },
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


def start_jaeger(state_dir: Path) -> tuple[str, str, str]:
    """Starts Jaeger all-in-one; returns (OTLP HTTP endpoint, OTLP gRPC endpoint, query/UI URL)."""
    otlp_grpc, otlp_http, query_http, query_grpc, health = (free_port() for _ in range(5))
    config = state_dir / "jaeger.yaml"
    config.write_text(yaml.safe_dump(jaeger_config(otlp_grpc, otlp_http, query_http, query_grpc, health)))
    url = f"http://127.0.0.1:{query_http}"
    log = state_dir / "jaeger.log"
    spawn_detached([jaeger_binary(), "--config", str(config)], log, state_dir / "jaeger.json", url=url)
    wait_until(lambda: _answers(url + "/api/services"), 60, f"Jaeger at {url} (log: {log})")
    return f"http://127.0.0.1:{otlp_http}", f"http://127.0.0.1:{otlp_grpc}", url


def prometheus_config(targets: list[ScrapeTarget], rule_files: list[Path], interval_s: float) -> dict[str, Any]:
    """Scrape config with one job per deployable, each target labelled with its service and deployable."""
    jobs: dict[str, list[dict[str, Any]]] = {}
    for t in targets:
        labels = {"service": t.service, "deployable": t.deployable}
        jobs.setdefault(t.deployable, []).append({"targets": [f"127.0.0.1:{t.port}"], "labels": labels})
    interval = f"{int(interval_s * 1000)}ms"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": configs} for job, configs in sorted(jobs.items())],
    }


def start_prometheus(
    state_dir: Path, targets: list[ScrapeTarget], rule_files: list[Path] | None = None, interval_s: float = 5.0
) -> str:
    """Starts Prometheus over ``targets`` with ``rule_files`` (default: the repo's rules); returns its URL."""
    rules = rule_files if rule_files is not None else sorted(RULES_DIR.glob("*.yml"))
    config = state_dir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(targets, rules, interval_s), sort_keys=False))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        _prometheus_binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={state_dir / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--enable-feature=exemplar-storage",
        "--web.enable-lifecycle",
    ]
    log = state_dir / "prometheus.log"
    spawn_detached(cmd, log, state_dir / "prometheus.json", url=url)
    wait_until(lambda: _answers(url + "/-/ready"), 60, f"Prometheus at {url} (log: {log})")
    return url


def start_observability(
    state_dir: Path, targets: list[ScrapeTarget], rule_files: list[Path] | None = None, interval_s: float = 5.0
) -> ObservabilityEndpoints:
    """Jaeger first (the services export to it from their start), then Prometheus; recorded in the state dir."""
    state_dir.mkdir(parents=True, exist_ok=True)
    otlp_http, otlp_grpc, jaeger_url = start_jaeger(state_dir)
    try:
        prometheus_url = start_prometheus(state_dir, targets, rule_files, interval_s)
    except BaseException:
        stop_detached(state_dir / "jaeger.json")  # nothing left running when the pair could not start
        raise
    endpoints = ObservabilityEndpoints(otlp_http, otlp_grpc, jaeger_url, prometheus_url)
    endpoints.save(state_dir)
    return endpoints


def observe_services(
    state_dir: Path, services: list[Service], rule_files: list[Path] | None = None, interval_s: float = 5.0
) -> ObservabilityEndpoints:
    """Starts Jaeger and Prometheus for ``services`` (not started yet): each gets the OTEL_* settings that export
    its spans to Jaeger, and Prometheus scrapes each one's probe port."""
    targets = [ScrapeTarget(s.name, s.name.split("-")[0], s.probe_port) for s in services]
    endpoints = start_observability(state_dir, targets, rule_files, interval_s)
    for service in services:
        service.env.update(endpoints.service_env())
    return endpoints


def observability_running(state_dir: Path) -> list[str]:
    return [
        f"{name} (pid {pid})" for name in ("jaeger", "prometheus") if (pid := alive_pid(state_dir / f"{name}.json"))
    ]


def stop_observability(state_dir: Path) -> None:
    stop_detached(state_dir / "prometheus.json")
    stop_detached(state_dir / "jaeger.json")
    (state_dir / OBSERVABILITY_FILE).unlink(missing_ok=True)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False
