"""Observability on a running stack, with Jaeger and Prometheus really running (local_stack/observability.py, what
`mmrag stack up --observability` starts): one upload is one trace with a span of every stage, parent to child in
stage order; one Search and one Ask are one trace each with the retrieval (and LLM) spans; Prometheus scrapes every
service, its SLI recording rules return values, exemplars carry trace ids; stopping the LLM worker opens the breaker
and fires its alert (the repo's rules with short `for` windows). Marked slow: it starts every service (~3 min)."""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from local_stack.observability import RULES_DIR, ObservabilityEndpoints, observe_services, stop_observability
from local_stack.services import Service
from local_stack.stack import Deployment, start_services
from local_stack.stack_status import stack_status
from mmrag.object_store import S3ObjectStore
from producers.upload import upload_files
from tests.ask_tools import INDEXING, PROMPT_AS_TESTED, ask, llm_worker, searched_objects
from tests.kafka_tools import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]  # ~3 min: every service of the stack starts
UPLOAD_STAGES = ("sqs_bridge", "normalizer", "text_embedder", "index_updater")  # in order, each the next's parent


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def short_rules(out_dir: Path) -> list[Path]:
    """The repo's rules, evaluated every second and with 2 s `for` windows (what the test can wait for)."""
    paths = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        data = yaml.safe_load(path.read_text())
        for group in data["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                if rule.get("for") not in (None, "0m", "0s"):
                    rule["for"] = "2s"
        paths.append(out_dir / path.name)
        paths[-1].write_text(yaml.safe_dump(data))
    return paths


def traces(obs: ObservabilityEndpoints, service: str, operation: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"service": service, "operation": operation, "limit": 50, "lookback": "1h"})
    return list(_get(f"{obs.jaeger_url}/api/traces?{query}")["data"])


def spans_by_service(trace: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for span in trace["spans"]:
        found.setdefault(trace["processes"][span["processID"]]["serviceName"], []).append(span)
    return found


def parent_of(span: dict[str, Any]) -> str | None:
    refs = [r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
    return refs[0] if refs else None


def ancestors(trace: dict[str, Any], span: dict[str, Any]) -> list[dict[str, Any]]:
    by_id = {s["spanID"]: s for s in trace["spans"]}
    chain, parent = [], parent_of(span)
    while parent in by_id:
        chain.append(by_id[parent])
        parent = parent_of(by_id[parent])
    return chain


def upload_trace(obs: ObservabilityEndpoints) -> dict[str, Any] | None:
    """The trace that holds a span of every upload stage (None until the index updater's spans are exported)."""
    for trace in traces(obs, "index_updater", "index_updater"):
        if set(UPLOAD_STAGES) <= set(spans_by_service(trace)):
            return trace
    return None


def complete_searches(obs: ObservabilityEndpoints, shards: int) -> list[dict[str, Any]]:
    """Search traces in which every shard's retrieval worker answered."""
    found = traces(obs, "query_service", "Search")
    return [t for t in found if len(spans_by_service(t).get("retrieval_worker", [])) == shards]


def traces_with(obs: ObservabilityEndpoints, operation: str, operations: set[str]) -> list[dict[str, Any]]:
    """The query service's ``operation`` traces holding every one of ``operations`` (all services exported)."""
    found = traces(obs, "query_service", operation)
    return [t for t in found if operations <= {s["operationName"] for s in t["spans"]}]


def prom(obs: ObservabilityEndpoints, path: str, **params: str) -> Any:
    url = f"{obs.prometheus_url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    body = _get(url)
    assert body["status"] == "success", body
    return body["data"]


def recorded_value(obs: ObservabilityEndpoints, name: str) -> float | None:
    result = prom(obs, "query", query=name)["result"]
    values = [float(r["value"][1]) for r in result]
    return values[0] if values and not math.isnan(values[0]) else None


def test_traces_metrics_and_alerts_on_a_running_stack(deployment: Deployment, tmp_path: Path) -> None:
    query = deployment.service(
        "query_service",
        MMRAG_LLM_FIRST_TOKEN_TIMEOUT_S="60",
        MMRAG_LLM_BREAKER_FAIL_MAX="2",
        MMRAG_LLM_BREAKER_RESET_S="600",  # stays open once opened: the alert's window is what is tested
        MMRAG_ANSWER_CACHE_SIZE="0",
        **PROMPT_AS_TESTED,
    )
    worker = llm_worker(deployment)
    shards = [deployment.service("retrieval_worker", str(k), MMRAG_SHARD=str(k)) for k in range(deployment.shards)]
    services = [deployment.service(n) for n in [*INDEXING, "vision_embedder"]] + shards + [query, worker]
    obs = observe_services(deployment.state_dir, services, short_rules(tmp_path), interval_s=1.0)
    try:
        start_services(services)
        check_the_stack(deployment, tmp_path, obs, services, worker)
    finally:
        stop_observability(deployment.state_dir)  # the fixture stops the services


def check_the_stack(
    deployment: Deployment, tmp_path: Path, obs: ObservabilityEndpoints, services: list[Service], worker: Service
) -> None:
    note = tmp_path / "tide-pools.md"
    note.write_text("Tide pools are rocky pools on the seashore that the sea fills at high tide.")
    upload_files(S3ObjectStore(deployment.s3_settings(), "test"), deployment.bucket, [note])
    port = deployment.grpc_port
    wait_for(lambda: searched_objects(port, "tide pools seashore"), 120, "the upload to be searchable")

    status = {row.name: row.ready for row in stack_status(deployment.state_dir) if row.kind in ("jaeger", "prometheus")}
    assert status == {"jaeger": True, "prometheus": True}, "`mmrag stack status` shows both backends"
    check_upload_trace(obs)
    searched_objects(port, "rocky pools")
    searches = check_search_trace(obs, deployment.shards)
    ask(port, "What lives in tide pools?")
    check_ask_trace(obs)
    check_prometheus(obs, {s.name for s in services}, searches)

    # Forced fault: the LLM worker stops; Asks degrade, the breaker opens and its alert fires within its window.
    worker.stop()
    for _ in range(3):
        ask(port, "What lives in tide pools?")
    firing = wait_for(lambda: alerts_firing(obs, "MmragLlmBreakerOpen"), 30, "the LLM breaker alert to fire")
    assert firing[0]["labels"]["severity"] == "page"


def check_upload_trace(obs: ObservabilityEndpoints) -> None:
    """One upload = one trace: one span of every stage, each stage's span a descendant of the one before, in order;
    the updater's batch span is a trace of its own that links the message's context (OTel batch consumers)."""
    trace = wait_for(lambda: upload_trace(obs), 60, "the upload's trace in Jaeger")
    stages = spans_by_service(trace)
    for earlier, later in zip(UPLOAD_STAGES, UPLOAD_STAGES[1:], strict=False):
        span = stages[later][0]
        assert stages[earlier][0]["spanID"] in {a["spanID"] for a in ancestors(trace, span)}, (earlier, later)
        assert stages[earlier][0]["startTime"] <= span["startTime"]
    assert {name: len(spans) for name, spans in stages.items()} == dict.fromkeys([*UPLOAD_STAGES, "vision_embedder"], 1)
    tags = {t["key"]: t["value"] for t in stages["index_updater"][0]["tags"]}
    assert tags["messaging.kafka.message.key"].endswith("tide-pools.md") and "mmrag.committed_after_ms" in tags
    assert not any("seashore" in str(t["value"]) for s in trace["spans"] for t in s["tags"]), "no document text"
    batches = traces(obs, "index_updater", "index_updater batch")
    linked = {r["traceID"] for b in batches for s in b["spans"] for r in s.get("references", [])}
    assert trace["traceID"] in linked


def check_search_trace(obs: ObservabilityEndpoints, shards: int) -> list[dict[str, Any]]:
    """One Search = one trace: encoding, the scatter-gather with every shard's span under it, fusion."""
    searches = wait_for(lambda: complete_searches(obs, shards), 30, "a Search trace")
    ops = {s["operationName"]: s for s in searches[0]["spans"]}
    assert {"Search", "encode query", "retrieve", "fuse"} <= set(ops)
    shard_spans = spans_by_service(searches[0])["retrieval_worker"]
    assert len(shard_spans) == shards
    assert all(parent_of(s) == ops["retrieve"]["spanID"] for s in shard_spans)
    return searches


def check_ask_trace(obs: ObservabilityEndpoints) -> None:
    """One Ask = one trace: retrieval, and the LLM worker's generation under the query service's LLM span."""
    wanted = {"Ask", "encode query", "retrieve", "llm", "generate"}
    asked = wait_for(lambda: traces_with(obs, "Ask", wanted), 60, "an Ask trace with its LLM worker's span")[0]
    ask_ops = {s["operationName"]: s for s in asked["spans"]}
    assert parent_of(ask_ops["generate"]) == ask_ops["llm"]["spanID"]
    generate_tags = {t["key"] for t in ask_ops["generate"]["tags"]}
    assert {"mmrag.completion_tokens", "mmrag.generation_ms", "mmrag.queue_wait_ms"} <= generate_tags


def check_prometheus(obs: ObservabilityEndpoints, services: set[str], searches: list[dict[str, Any]]) -> None:
    """Every service scraped and up; the SLI recording rules have values; exemplars name Search traces."""

    def up() -> set[str]:
        return {t["labels"]["service"] for t in prom(obs, "targets")["activeTargets"] if t["health"] == "up"}

    wait_for(lambda: up() == services, 30, "every service's target up")
    assert len(prom(obs, "targets")["activeTargets"]) == len(services)
    for name in (
        "mmrag:search_seconds:p50_5m",
        "mmrag:freshness_seconds:p99_5m",
        "mmrag:ask_first_token_seconds:p50_5m",
    ):
        assert wait_for(lambda name=name: recorded_value(obs, name), 30, f"{name} to have a value") > 0
    now = time.time()
    exemplars = prom(obs, "query_exemplars", query="mmrag_search_seconds_bucket", start=str(now - 600), end=str(now))
    trace_ids = {e["labels"].get("trace_id", "").lstrip("0") for series in exemplars for e in series["exemplars"]}
    assert trace_ids & {t["traceID"].lstrip("0") for t in searches}, "exemplars name Search traces"


def alerts_firing(obs: ObservabilityEndpoints, alertname: str) -> list[dict[str, Any]]:
    alerts = prom(obs, "alerts")["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]
