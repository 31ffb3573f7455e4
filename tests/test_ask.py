"""Ask end to end on the real broker: retrieval, a real llama.cpp LLM worker over llm.requests.v1, the breaker
and the degraded answer, and a request that expired before a worker took it."""

from __future__ import annotations

import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Producer
from rich.console import Console

from local_stack.services import Service
from mmrag.kafka_clients import encode_headers
from mmrag.messages import now_ms
from mmrag.object_store import S3ObjectStore
from mmrag.pb import query_pb2, query_pb2_grpc
from mmrag.pb.events_pb2 import GenerateRequest, PromptSource
from mmrag.request_reply import ReplyAddress
from operator_cli.ask import stream_answer
from producers.upload import upload_files
from tests.kafka_tools import read_topic, wait_for

pytestmark = pytest.mark.kafka

CORPUS = {
    "kafka-groups.md": "Kafka consumer groups split the partitions of a topic between their members. Each partition "
    "is read by exactly one member of the group, and the group commits offsets to remember how far it has read.",
    "sourdough.md": "Sourdough bread rises with a starter of wild yeast and lactic acid bacteria instead of baker's "
    "yeast. The starter is fed flour and water every day and the dough ferments for many hours before baking.",
    "tide-pools.md": "Tide pools are rocky pools on the seashore that the sea fills at high tide. Sea anemones, "
    "starfish, crabs and small fish live in them and survive the hours when the tide is out.",
}
QUESTION = "Which animals live in tide pools?"
ANSWERING = "tide-pools.md"


@dataclass
class Asked:
    sources: list[query_pb2.AskSource] = field(default_factory=list)
    deltas: list[str] = field(default_factory=list)
    final: query_pb2.AskFinal | None = None
    order: list[str] = field(default_factory=list)


def ask(port: int, question: str, timeout_s: float = 120) -> Asked:
    asked = Asked()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        for event in stub.Ask(query_pb2.AskRequest(question=question, top_k=5), timeout=timeout_s):
            kind = event.WhichOneof("event")
            asked.order.append(kind)
            if kind == "sources":
                asked.sources.extend(event.sources.sources)
            elif kind == "delta":
                asked.deltas.append(event.delta.text)
            else:
                asked.final = event.final
    return asked


def searched_objects(port: int, text: str) -> set[str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = query_pb2_grpc.QueryServiceStub(channel).Search(query_pb2.SearchQuery(text=text, top_k=5), timeout=10)
    return {r.object_id for r in reply.results}


def llm_worker(deployment, instance: str = "0") -> Service:  # type: ignore[no-untyped-def]
    env = {**deployment.env(), "MMRAG_INSTANCE_ID": f"llm_worker-{instance}", "MMRAG_LLM_MAX_TOKENS": "64"}
    return Service(f"llm_worker-{instance}", "consumers.llm_worker", env, deployment.state_dir / "logs")


def metric(service: Service, name: str) -> float:
    text = urllib.request.urlopen(service.probe_url + "/metrics").read().decode()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


def readiness(service: Service) -> str:
    return str(urllib.request.urlopen(service.probe_url + "/readyz").read().decode())


def assert_answered_from_sources(asked: Asked, source_key: str) -> None:
    assert asked.order[0] == "sources" and asked.order[-1] == "final" and set(asked.order[1:-1]) == {"delta"}
    assert asked.sources[0].object_id.endswith(source_key), "retrieval ranks the matching document first"
    final = asked.final
    assert final is not None and not final.is_degraded, final.degraded_reason
    assert final.answer == "".join(asked.deltas) and len(asked.deltas) > 1, "the answer arrives as a stream"
    assert final.citations, f"the answer cites a source: {final.answer!r}"
    retrieved = {(s.number, s.object_id) for s in asked.sources}
    assert all((c.number, c.object_id) in retrieved for c in final.citations)
    assert final.citations[0].object_id.endswith(source_key)
    assert final.completion_tokens > 0 and final.model
    t = final.timings
    assert 0 < t.retrieve_ms < t.first_token_ms < t.total_ms


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
        f"{prefix}llm.requests.v1", request.SerializeToString(), cid, headers=encode_headers(address.headers())
    )
    assert producer.flush(10) == 0
    return cid


def test_ask_streams_cited_answers_degrades_without_workers_and_recovers(  # type: ignore[no-untyped-def]
    deployment, bootstrap: str, tmp_path: Path
) -> None:
    from local_stack.stack import start_services

    names = ["sqs_bridge", "normalizer", "text_embedder", "index_updater"]
    query = deployment.service(
        "query_service",
        MMRAG_LLM_FIRST_TOKEN_TIMEOUT_S="60",  # 2 busy cores: a cold first token can take long
        MMRAG_LLM_BREAKER_FAIL_MAX="2",
        MMRAG_LLM_BREAKER_RESET_S="3",
    )
    shards = [deployment.service("retrieval_worker", str(k), MMRAG_SHARD=str(k)) for k in range(deployment.shards)]
    worker = llm_worker(deployment)
    start_services([deployment.service(n) for n in names] + shards + [query, worker])
    for name, text in CORPUS.items():
        (tmp_path / name).write_text(text)
    upload_files(S3ObjectStore(deployment.s3_settings(), "test"), deployment.bucket, [tmp_path / n for n in CORPUS])
    port = deployment.grpc_port
    wait_for(lambda: len(searched_objects(port, "tide pools sea anemones")) == 3, 120, "the corpus to be searchable")

    assert_answered_from_sources(ask(port, QUESTION), ANSWERING)

    late = send_expired_request(bootstrap, deployment.topic_prefix)
    wait_for(lambda: metric(worker, "mmrag_llm_requests_expired_total") >= 1, 30, "the expired request to be dropped")
    replies = read_topic(bootstrap, f"{deployment.topic_prefix}llm.replies.v1", idle_s=1)
    assert replies and late not in {r.key for r in replies}, "an expired request is never generated"

    worker.stop()
    wait_for(lambda: "llm workers: 0" in readiness(query), 15, "the query service to see no LLM worker")
    degraded = assert_degraded(ask(port, QUESTION, timeout_s=10), {"no-llm-worker", "llm-timeout"})
    assert degraded.timings.total_ms < 2000, "degrades at once, not after a timeout"
    assert_degraded(ask(port, QUESTION, timeout_s=10), {"no-llm-worker"})
    assert_degraded(ask(port, QUESTION, timeout_s=10), {"breaker-open"})
    assert "llm breaker open" in readiness(query)
    assert "mmrag_llm_breaker_state 2.0" in urllib.request.urlopen(query.probe_url + "/metrics").read().decode()

    llm_worker(deployment, "1").start().wait_ready(120)
    recovered = wait_for(
        lambda: (a := ask(port, QUESTION)).final is not None and not a.final.is_degraded and a,
        60,
        "the breaker to close once a worker is back",
    )
    assert_answered_from_sources(recovered, ANSWERING)

    terminal = Console(record=True, width=200)
    final = stream_answer(f"127.0.0.1:{port}", QUESTION, top_k=5, timeout_s=60, console=terminal)
    shown = terminal.export_text()
    assert "[1]" in shown and ANSWERING in shown and final.answer.strip()[:20] in shown.replace("\n", " ")
    assert f"cited: [{final.citations[0].number}] {final.citations[0].object_id}" in shown, shown
