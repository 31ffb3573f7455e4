"""The overview dashboard as code: Grafana dashboard JSON (schema 39) written to deploy/dashboards/overview.json.

PyPI has no Grafana dashboard library here (`grafana-foundation-sdk` is published for Go and npm only), so this is
a small generator of the dashboard model: rows of time-series and stat panels over the Prometheus data source
variable ``${datasource}``. `python -m local_stack.dashboards` rewrites the file; tests/test_dashboards.py keeps it in
step and checks that every query parses (promtool) and names only series the deployables export."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parents[1] / "deploy" / "dashboards" / "overview.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WIDTH = 24


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]  # (legend, PromQL)
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    description: str = ""


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Ingest",
        (
            Panel("Messages handled / s per stage", (("{{stage}}", "mmrag:messages_processed:rate_1m"),), "ops"),
            Panel("Consumer lag per stage", (("{{stage}}", "mmrag:consumer_lag:sum"),), "short"),
            Panel(
                "Freshness (upload to searchable)",
                (
                    ("p50", "mmrag:freshness_seconds:p50_5m"),
                    ("p99", "mmrag:freshness_seconds:p99_5m"),
                ),
                "s",
                description="objective: p99 under 30 s (alert MmragFreshnessOverObjective)",
            ),
            Panel("Dead letters / s per stage", (("{{stage}}", "mmrag:dlq:rate_5m"),), "ops"),
            Panel("Failures / s per stage", (("{{stage}}", "mmrag:messages_failed:rate_1m"),), "ops"),
            Panel("Back-pressure (1 = backing off)", (("{{stage}}", "max by (stage) (mmrag_backpressure)"),)),
        ),
    ),
    (
        "Query",
        (
            Panel(
                "Search latency",
                (("p50", "mmrag:search_seconds:p50_5m"), ("p99", "mmrag:search_seconds:p99_5m")),
                "s",
                description="alert MmragSearchLatencyHigh: p99 over 150 ms for 5 minutes",
            ),
            Panel(
                "Ask first token",
                (("p50", "mmrag:ask_first_token_seconds:p50_5m"), ("p99", "mmrag:ask_first_token_seconds:p99_5m")),
                "s",
            ),
            Panel("Ask degraded share", (("degraded", "mmrag:ask_degraded:ratio_5m"),), "percentunit"),
            Panel(
                "Degraded Asks / s by reason",
                (("{{reason}}", "sum by (reason) (rate(mmrag_ask_degraded_total[5m]))"),),
                "ops",
            ),
            Panel("LLM tokens / s", (("{{kind}}", "mmrag:llm_tokens:rate_1m"),), "short"),
            Panel(
                "LLM breaker and workers",
                (("breaker (2 = open)", "max(mmrag_llm_breaker_state)"), ("workers", "max(mmrag_llm_workers)")),
                kind="stat",
            ),
        ),
    ),
    (
        "Per shard and deployable",
        (
            Panel(
                "Retrieval requests / s per shard worker",
                (
                    (
                        "{{service}}",
                        "sum by (service) (rate(mmrag_messages_processed_total"
                        '{deployable=~"retrieval_worker|faiss_worker"}[1m]))',
                    ),
                ),
                "ops",
                width=12,
            ),
            Panel(
                "Retrieval handle time p99 per shard worker",
                (
                    (
                        "{{service}}",
                        "histogram_quantile(0.99, sum by (service, le) "
                        '(rate(mmrag_handle_seconds_bucket{deployable=~"retrieval_worker|faiss_worker"}[5m])))',
                    ),
                ),
                "s",
                width=12,
            ),
            Panel("Ready (1) per service", (("{{service}}", "min by (service) (mmrag_ready)"),), width=12),
            Panel(
                "CPU per service (cores)",
                (("{{service}}", "sum by (service) (rate(process_cpu_seconds_total[1m]))"),),
                width=12,
            ),
        ),
    ),
)


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
        for i, (legend, expr) in enumerate(panel.queries)
    ]
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if panel.kind == "timeseries" else {},
        "targets": targets,
    }


def overview() -> dict[str, Any]:
    """The overview dashboard: one row per part of the system, panels left to right, wrapping at 24 columns."""
    panels: list[dict[str, Any]] = []
    y, next_id = 0, 1
    for title, row in ROWS:
        panels.append({"id": next_id, "type": "row", "title": title, "collapsed": False, "panels": []})
        panels[-1]["gridPos"] = {"h": 1, "w": WIDTH, "x": 0, "y": y}
        next_id, y, x = next_id + 1, y + 1, 0
        for panel in row:
            if x + panel.width > WIDTH:
                x, y = 0, y + 8
            panels.append(_panel(panel, next_id, x, y))
            next_id, x = next_id + 1, x + panel.width
        y += 8
    return {
        "uid": "mmrag-overview",
        "title": "kafka-mmrag overview",
        "tags": ["kafka-mmrag"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": panels,
    }


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of ``dashboard``."""
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def render() -> str:
    return json.dumps(overview(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_stack.dashboards", description=__doc__)
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render())
    print(f"wrote {args.out} ({len(queries(overview()))} queries)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
