"""The alert and recording rules in deploy/prometheus/rules: promtool accepts them, every alert has a unit test
that fires it (and the tests pass), and every series they read is one the deployables export."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from local_stack.metric_catalog import unknown_series

REPO = Path(__file__).resolve().parents[1]
RULES = sorted((REPO / "deploy/prometheus/rules").glob("*.yml"))
RULE_TESTS = sorted((REPO / "deploy/prometheus/tests").glob("*.yml"))

pytestmark = pytest.mark.unit


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing -> run scripts/setup.sh (Debian's prometheus package)"
    return found


def _rules() -> list[dict[str, Any]]:
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def test_promtool_accepts_every_rule_file() -> None:
    assert RULES, "no rule files"
    done = subprocess.run([_promtool(), "check", "rules", *map(str, RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULES)


def test_promtool_unit_tests_pass() -> None:
    done = subprocess.run(
        [_promtool(), "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True, cwd=RULE_TESTS[0].parent
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    fired = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert len(alerts) >= 9
    assert alerts - fired == set(), "alerts without a unit test that fires them"


def test_rules_read_only_exported_series_and_defined_recordings() -> None:
    rules = _rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    unknown = {rule.get("alert") or rule["record"]: unknown_series(rule["expr"], recorded) for rule in rules}
    assert {name: names for name, names in unknown.items() if names} == {}


def test_the_seed_alerts_are_there() -> None:
    """Seed 003: search latency over 150 ms for 5 min, embedding worker errors over 10 a minute, index CPU > 85 %."""
    by_name = {rule["alert"]: rule for rule in _rules() if "alert" in rule}
    assert "> 0.150" in by_name["MmragSearchLatencyHigh"]["expr"]
    assert by_name["MmragSearchLatencyHigh"]["for"] == "5m"
    assert "* 60 > 10" in by_name["MmragEmbeddingWorkerErrors"]["expr"]
    assert "> 0.85" in by_name["MmragIndexCpuHigh"]["expr"]
