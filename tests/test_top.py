"""`mmrag top`: quantiles as Prometheus computes them, a service's row from two scrapes, and the command against
real probe servers (their /metrics and /readyz), once as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from local_stack.processes import free_port, wait_until
from operator_cli.top import parse_targets, snapshot
from operator_cli.top_metrics import Scrape, Target, parse, quantile, service_row

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[1]


def test_quantiles_interpolate_within_buckets_like_histogram_quantile() -> None:
    cumulative = {0.1: 0.0, 0.25: 0.0, 0.5: 10.0, float("inf"): 10.0}
    assert quantile(0.99, cumulative) == pytest.approx(0.4975)  # promtool's unit test of the same data
    assert quantile(0.5, cumulative) == pytest.approx(0.375)
    assert quantile(0.99, {1.0: 5.0, float("inf"): 10.0}) == 1.0  # in the +Inf bucket: the highest finite bound
    assert quantile(0.5, {1.0: 0.0, float("inf"): 0.0}) is None


def _metrics(processed: int, fresh_over_30: int, lag: int) -> str:
    return textwrap.dedent(
        f"""\
        # TYPE mmrag_messages_processed_total counter
        mmrag_messages_processed_total{{stage="index_updater"}} {processed}
        # TYPE mmrag_consumer_lag gauge
        mmrag_consumer_lag{{stage="index_updater",topic="embeddings.v1",partition="0"}} {lag}
        mmrag_consumer_lag{{stage="index_updater",topic="embeddings.v1",partition="1"}} 1
        # TYPE mmrag_freshness_seconds histogram
        mmrag_freshness_seconds_bucket{{stage="index_updater",le="1.0"}} 10
        mmrag_freshness_seconds_bucket{{stage="index_updater",le="30.0"}} 10
        mmrag_freshness_seconds_bucket{{stage="index_updater",le="60.0"}} {10 + fresh_over_30}
        mmrag_freshness_seconds_bucket{{stage="index_updater",le="+Inf"}} {10 + fresh_over_30}
        mmrag_freshness_seconds_count{{stage="index_updater"}} {10 + fresh_over_30}
        mmrag_freshness_seconds_sum{{stage="index_updater"}} 100
        # TYPE mmrag_dlq_total counter
        mmrag_dlq_total{{stage="index_updater"}} 2
        """
    )


def test_a_row_has_the_rate_lag_and_freshness_of_the_interval() -> None:
    target = Target("index_updater", "http://127.0.0.1:1", restarts=1)
    before = Scrape(target, 100.0, parse(_metrics(40, 0, 7)), ready=True)
    after = Scrape(target, 102.0, parse(_metrics(50, 4, 3)), ready=True)
    row = service_row(before, after)
    assert row["messages_per_s"] == 5.0 and row["lag"] == 4 and row["dlq_total"] == 2 and row["restarts"] == 1
    assert 30 < row["freshness_p99_s"] <= 60 and row["freshness_lifetime"] is False  # type: ignore[operator]
    quiet = service_row(after, after)  # nothing new: the quantile is over everything since start
    assert quiet["freshness_lifetime"] is True and quiet["messages_per_s"] == 0.0


def test_targets_name_their_probe_urls() -> None:
    assert parse_targets("a=http://h:1, b=http://h:2/") == [Target("a", "http://h:1"), Target("b", "http://h:2")]
    with pytest.raises(ValueError, match="want NAME=http://host:port"):
        parse_targets("a=h:1")


PROBE_PROGRAM = """
import sys, threading, time
from mmrag.telemetry import Probes
from query_service.search import SEARCH_SECONDS
probes = Probes("query_service")
probes.serve("127.0.0.1", int(sys.argv[1]))
probes.set_ready(sys.argv[2] == "ready", "warming up")
for i in range(20):
    SEARCH_SECONDS.observe(0.004 if i % 10 else 0.2)
time.sleep(120)
"""


def test_top_once_json_reads_real_probe_servers() -> None:
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen([sys.executable, "-c", PROBE_PROGRAM, str(port), state], cwd=REPO)
        for port, state in zip(ports, ("ready", "warming"), strict=True)
    ]
    try:
        wait_until(lambda: all(_answers(p) for p in ports), 60, "the probe servers")
        targets = f"query=http://127.0.0.1:{ports[0]},other=http://127.0.0.1:{ports[1]},gone=http://127.0.0.1:1"
        cmd = [sys.executable, "-m", "operator_cli", "top", "--once", "--json", "--interval", "0.2"]
        done = subprocess.run([*cmd, "--targets", targets], cwd=REPO, capture_output=True, text=True, timeout=60)
    finally:
        for proc in procs:
            proc.kill()
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    rows = {row["service"]: row for row in view["services"]}
    assert rows["query"]["ready"] is True and rows["other"]["ready"] is False and rows["gone"]["ready"] is False
    assert view["query"]["search_p50_ms"] < 10 and 100 < view["query"]["search_p99_ms"] <= 250
    assert view["query"]["search_lifetime"] is True


def _answers(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1):
            return True
    except OSError:
        return False


def test_snapshot_matches_services_by_name() -> None:
    target = Target("normalizer", "http://127.0.0.1:1")
    view = snapshot([], [Scrape(target, 1.0, parse(_metrics(5, 0, 0)), ready=True)])
    assert view["services"][0]["service"] == "normalizer"  # type: ignore[index]
    assert view["services"][0]["messages_per_s"] is None  # type: ignore[index]  # no earlier scrape: no rate
