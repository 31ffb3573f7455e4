"""The Prometheus series the deployables really export, read from their source (every ``Counter(...)``,
``Gauge(...)``, ``Histogram(...)``, ``Summary(...)`` with a literal name), plus the client library's process
metrics and Prometheus' own ``up``. Rules, dashboards and `mmrag top` are checked against it, so a query can only
name a series some service serves."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mmrag", "consumers", "producers", "index_updater", "query_service")
KINDS = {"Counter", "Gauge", "Histogram", "Summary"}
# prometheus_client's default collectors (every deployable serves them) and what Prometheus adds per target
STANDARD = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
    "python_gc_collections_total",
    "up",
    "scrape_duration_seconds",
}
SERIES_NAME = re.compile(r"\b(mmrag_[a-z0-9_]+|process_[a-z0-9_]+|python_[a-z0-9_]+|up)\b(?!\s*\()")
RECORDED_NAME = re.compile(r"\bmmrag:[a-z0-9_:]+\b")


@cache
def exported_metrics() -> dict[str, str]:
    """Metric name -> kind (counter, gauge, histogram, summary) of every metric the deployables define."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "pb" in path.relative_to(REPO).parts:
                continue
            tree = ast.parse(path.read_text(), str(path))
            aliases = _client_aliases(tree)
            for node in ast.walk(tree):
                kind = _metric_kind(node, aliases)
                if kind and isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                    found[str(node.args[0].value)] = kind
    return found


def _client_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> metric class of ``from prometheus_client import Counter as X`` imports (names as they are)."""
    aliases = {kind: kind for kind in KINDS}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "prometheus_client":
            aliases |= {alias.asname: alias.name for alias in node.names if alias.asname and alias.name in KINDS}
    return aliases


def _metric_kind(node: ast.AST, aliases: dict[str, str]) -> str:
    if not isinstance(node, ast.Call):
        return ""
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    return aliases[name].lower() if name in aliases else ""


def exported_series() -> set[str]:
    """Every series name a scrape of the deployables can return (histogram parts included)."""
    series = set(STANDARD)
    parts = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("", "_count", "_sum")}
    for name, kind in exported_metrics().items():
        series |= {name + suffix for suffix in parts.get(kind, ("",))}
    return series


def unknown_series(expr: str, recorded: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Names in the PromQL ``expr`` that no deployable exports and no recording rule of ``recorded`` defines."""
    known = exported_series()
    names = set(SERIES_NAME.findall(expr)) - known
    names |= set(RECORDED_NAME.findall(expr)) - set(recorded)
    return sorted(names)
