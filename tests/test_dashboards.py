"""The overview dashboard (deploy/dashboards/overview.json) is what local_stack/dashboards.py generates, and every
panel query parses in promtool and names only series the deployables export or the recording rules define."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from local_stack.dashboards import OUTPUT, overview, queries, render
from local_stack.metric_catalog import unknown_series

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.unit


def _recorded() -> set[str]:
    rules = (REPO / "deploy/prometheus/rules").glob("*.yml")
    return {
        r["record"] for p in rules for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"] if "record" in r
    }


def test_the_checked_in_dashboard_is_the_generated_one() -> None:
    assert OUTPUT.read_text() == render(), "run `uv run python -m local_stack.dashboards` and commit the file"
    panels = json.loads(OUTPUT.read_text())["panels"]
    titles = {p["title"] for p in panels}
    for wanted in ("Consumer lag per stage", "Freshness (upload to searchable)", "Search latency", "LLM tokens / s"):
        assert wanted in titles
    assert len({p["id"] for p in panels}) == len(panels)


def test_every_panel_query_parses_in_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing -> run scripts/setup.sh (Debian's prometheus package)"
    found = queries(overview())
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(found)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(found)} rules found" in done.stdout


def test_every_panel_query_names_exported_series() -> None:
    recorded = _recorded()
    unknown = {title: unknown_series(expr, recorded) for title, expr in queries(overview())}
    assert {title: names for title, names in unknown.items() if names} == {}
    broken = {title: expr for title, expr in queries(overview()) if "mmrag" not in expr and "process_" not in expr}
    assert broken == {}
