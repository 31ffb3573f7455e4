"""An LLM worker killed and brought back, on the real stack (broker, retrieval, query service, llama.cpp worker):
the query service counts the killed worker absent within seconds (its heartbeats stop; its group session would
hold it for 10 s), so Asks degrade `no-llm-worker` at once instead of waiting out the first-token timeout; once a
worker is present again, the open breaker lets the next Ask probe, long before its reset timeout. Then
`mmrag ask --json` on the recovered stack."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from local_stack.services import Service
from mmrag.pb import query_pb2
from operator_cli.main import main
from tests.ask_tools import CORPUS, PROMPT_AS_TESTED, ask, llm_worker, readiness, start_with_corpus
from tests.kafka_tools import wait_for
from tests.test_ask import ANSWERING, QUESTION

pytestmark = pytest.mark.kafka
LLM_FAILURES = {"breaker-open", "no-llm-worker", "llm-timeout", "llm-interrupted", "llm-error", "llm-empty"}


def workers(query: Service) -> int | None:
    """The LLM workers the query service counts now (its /readyz line), None while it does not know."""
    found = re.search(r"llm workers: (\d+|None)", readiness(query))
    assert found, readiness(query)
    return None if found[1] == "None" else int(found[1])


def generated(final: query_pb2.AskFinal | None) -> bool:
    """The LLM wrote this answer (grounded or not), rather than the LLM path failing."""
    return (
        final is not None
        and bool(final.model)
        and final.completion_tokens > 0
        and (final.degraded_reason not in LLM_FAILURES)
    )


def test_a_killed_worker_is_absent_within_seconds_and_a_returning_one_is_probed_at_once(
    deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    query = deployment.service(
        "query_service",
        MMRAG_LLM_FIRST_TOKEN_TIMEOUT_S="60",  # a wait for the first token would show as a minute-long Ask
        MMRAG_LLM_BREAKER_FAIL_MAX="2",
        MMRAG_LLM_BREAKER_RESET_S="300",  # never passes in this test: only a worker's return can close it
        MMRAG_ANSWER_CACHE_SIZE="0",  # the same question each time: it must reach the LLM path each time
        **PROMPT_AS_TESTED,
    )
    worker = llm_worker(deployment)
    start_with_corpus(deployment, CORPUS, "tide pools sea anemones", tmp_path, [query, worker])
    port = deployment.grpc_port
    first = ask(port, QUESTION)
    assert generated(first.final), first.final
    assert workers(query) == 1

    worker.kill()  # SIGKILL: no goodbye, the consumer group keeps the member for its session (10 s)
    killed_at = time.monotonic()
    wait_for(lambda: workers(query) == 0, 6, "the killed worker to be counted absent", interval_s=0.1)
    absent_s = time.monotonic() - killed_at
    for _ in range(2):  # breaker: 2 failures open it
        degraded = ask(port, QUESTION, timeout_s=30).final
        assert degraded is not None and degraded.is_degraded and degraded.degraded_reason == "no-llm-worker", degraded
        assert degraded.answer and degraded.citations[0].object_id.endswith(ANSWERING)
    refused = ask(port, QUESTION, timeout_s=30).final
    assert refused is not None and refused.degraded_reason == "breaker-open", refused
    assert "llm breaker open" in readiness(query)

    llm_worker(deployment, "1").start().wait_ready(120)
    ready_at = time.monotonic()
    # present once it holds request partitions: the group hands them over when it drops the killed member
    wait_for(lambda: workers(query) == 1, 60, "the worker started again to be present", interval_s=0.1)
    present_at = time.monotonic()
    probe = ask(port, QUESTION)
    answered_at = time.monotonic()
    assert generated(probe.final), probe.final
    assert "llm breaker closed" in readiness(query), "the probe's success closed the breaker, 300 s early"
    with capsys.disabled():  # the figures, for the record (timings are not asserted: bench/ is for that)
        print(
            f"\nkill -9 -> counted absent: {absent_s:.2f} s; worker ready -> present {present_at - ready_at:.2f} s "
            f"(killed {ready_at - killed_at:.2f} s before ready) -> first generated answer done "
            f"{answered_at - present_at:.2f} s (first token {probe.final.timings.first_token_ms:.0f} ms)"
        )

    code = main(["ask", QUESTION, "--json", "--target", f"127.0.0.1:{port}"])
    out = capsys.readouterr().out
    assert code == 0
    answer = json.loads(out)
    assert answer["question"] == QUESTION and answer["answer"].strip()
    assert answer["is_degraded"] in (True, False) and answer["degraded_reason"] not in LLM_FAILURES
    assert answer["sources"][0]["object_id"].endswith(ANSWERING)
    retrieved = {(s["number"], s["object_id"]) for s in answer["sources"]}
    assert answer["citations"] and all((c["number"], c["object_id"]) in retrieved for c in answer["citations"])
    assert 0 < answer["timings"]["retrieve_ms"] <= answer["timings"]["total_ms"]
    assert answer["from_cache"] is False and answer["model"]
