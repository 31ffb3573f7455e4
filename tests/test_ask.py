"""Ask end to end on the real broker: retrieval, a real llama.cpp LLM worker over llm.requests.v1, the breaker
and the degraded answer, and a request that expired before a worker took it."""

from __future__ import annotations

import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Producer
from rich.console import Console

from mmrag.kafka_clients import encode_headers
from mmrag.messages import now_ms
from mmrag.pb import query_pb2, query_pb2_grpc
from mmrag.pb.events_pb2 import GenerateRequest, PromptSource
from mmrag.request_reply import ReplyAddress
from operator_cli.ask import stream_answer
from tests.ask_tools import (
    CORPUS,
    PROMPT_AS_TESTED,
    Asked,
    ask,
    assert_answered_from_sources,
    llm_worker,
    metric,
    readiness,
    start_with_corpus,
)
from tests.kafka_tools import read_topic, wait_for

pytestmark = pytest.mark.kafka

QUESTION = "Which animals live in tide pools?"
ANSWERING = "tide-pools.md"


def assert_degraded(asked: Asked, reasons: set[str]) -> query_pb2.AskFinal:
    final = asked.final
    assert final is not None and final.is_degraded and final.degraded_reason in reasons, final
    assert asked.sources and asked.sources[0].object_id.endswith(ANSWERING)
    assert "crabs" in final.answer and "[1]" in final.answer, "an extractive answer cites the top source"
    assert [c.number for c in final.citations][:1] == [1]
    return final


def send_expired_request(bootstrap: str, prefix: str) -> str:
    cid = uuid.uuid4().hex
    address = ReplyAddress(cid, f"{prefix}llm.replies.v1", 0, now_ms() - 1000)
    request = GenerateRequest(
        correlation_id=cid, question="Is this late?", sources=[PromptSource(number=1, label="x", text="late")]
    )
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(
        f"{prefix}llm.requests.v1", request.SerializeToString(), cid, headers=dict(encode_headers(address.headers()))
    )
    assert producer.flush(10) == 0
    return cid


def test_ask_streams_cited_answers_degrades_without_workers_and_recovers(
    deployment, bootstrap: str, tmp_path: Path
) -> None:
    query = deployment.service(
        "query_service",
        MMRAG_LLM_FIRST_TOKEN_TIMEOUT_S="60",  # 2 busy cores: a cold first token can take long
        MMRAG_LLM_BREAKER_FAIL_MAX="2",
        MMRAG_LLM_BREAKER_RESET_S="3",
        MMRAG_ANSWER_CACHE_SIZE="0",  # the same question is asked again: it must reach the LLM path each time
        **PROMPT_AS_TESTED,
    )
    worker = llm_worker(deployment)
    start_with_corpus(deployment, CORPUS, "tide pools sea anemones", tmp_path, [query, worker])
    port = deployment.grpc_port

    assert_answered_from_sources(ask(port, QUESTION), ANSWERING)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        for request, said in (
            (query_pb2.AskRequest(question="castle " * 500), "MMRAG_ASK_MAX_QUESTION_CHARS"),
            (query_pb2.AskRequest(question=QUESTION, max_tokens=-5), "MMRAG_ASK_MAX_TOKENS"),
            (query_pb2.AskRequest(question=QUESTION, max_tokens=10**9), "MMRAG_ASK_MAX_TOKENS"),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.Ask(request, timeout=30))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and said in str(refused.value.details())

    late = send_expired_request(bootstrap, deployment.topic_prefix)
    wait_for(lambda: metric(worker, "mmrag_llm_requests_expired_total") >= 1, 30, "the expired request to be dropped")
    replies = read_topic(bootstrap, f"{deployment.topic_prefix}llm.replies.v1", idle_s=1)
    assert replies and late not in {r.key for r in replies}, "an expired request is never generated"

    worker.stop()
    wait_for(lambda: "llm workers: 0" in readiness(query), 60, "the query service to see no LLM worker")
    degraded = assert_degraded(ask(port, QUESTION, timeout_s=10), {"no-llm-worker", "llm-timeout"})
    assert degraded.timings.total_ms < 2000, "degrades at once, not after a timeout"
    assert_degraded(ask(port, QUESTION, timeout_s=10), {"no-llm-worker"})
    assert_degraded(ask(port, QUESTION, timeout_s=10), {"breaker-open"})
    assert "llm breaker open" in readiness(query)
    assert "mmrag_llm_breaker_state 2.0" in urllib.request.urlopen(query.probe_url + "/metrics").read().decode()

    llm_worker(deployment, "1").start().wait_ready(120)
    recovered = wait_for(  # generated again (a refused generation is "ungrounded", not an unavailable LLM)
        lambda: (a := ask(port, QUESTION)).final is not None and a.final.degraded_reason in ("", "ungrounded") and a,
        60,
        "the breaker to close once a worker is back",
    )
    assert_answered_from_sources(recovered, ANSWERING)

    terminal = Console(record=True, width=200)
    final = stream_answer(f"127.0.0.1:{port}", QUESTION, top_k=5, timeout_s=60, console=terminal)
    shown = terminal.export_text()
    assert "[1]" in shown and ANSWERING in shown and final.answer.strip()[:20] in shown.replace("\n", " ")
    assert f"cited: [{final.citations[0].number}] {final.citations[0].object_id}" in shown, shown
