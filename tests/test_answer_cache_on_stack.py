"""The Ask answer cache on the real stack, in a real redis-server shared by two query-service replicas (each its own
gRPC port and reply partition): the second replica answers from the cache what the first one generated, nothing
generated again; overwriting the cited document drops the entry at once (index-status.v1), and the next Ask cites
the new version's content; that answer is then shared again."""

from __future__ import annotations

import re
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest

from local_stack.processes import free_port
from local_stack.services import Service
from mmrag.object_store import S3ObjectStore
from mmrag.pb import query_pb2, query_pb2_grpc
from producers.upload import upload_files
from tests.ask_tools import CORPUS, PROMPT_AS_TESTED, all_indexed, indexed_version
from tests.kafka_tools import wait_for
from tests.scripted_llm import ScriptedLlm

pytestmark = pytest.mark.kafka

OVERWRITTEN = (
    "Tide pools are rocky pools on the seashore that the sea fills at high tide. Octopuses, hermit crabs and "
    "limpets live in them and hide under the seaweed when the tide is out."
)
QUESTION = "Which animals live in tide pools?"
ANSWERING = "tide-pools.md"


def ask(port: int, question: str = QUESTION) -> tuple[query_pb2.AskSources, query_pb2.AskFinal]:
    sources, final = query_pb2.AskSources(), query_pb2.AskFinal()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        for event in stub.Ask(query_pb2.AskRequest(question=question, top_k=5), timeout=120):
            if event.WhichOneof("event") == "sources":
                sources = event.sources
            elif event.WhichOneof("event") == "final":
                final = event.final
    return sources, final


def counted(service: Service, name: str, label: str = "") -> float:
    """The sum of a metric's samples whose labels contain ``label``."""
    text = urllib.request.urlopen(service.probe_url + "/metrics").read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{") and label in line)


def cited(final: query_pb2.AskFinal, key: str) -> query_pb2.AskSource:
    found = [c for c in final.citations if c.object_id.endswith(key)]
    assert found, f"the answer cites {key}: {final.answer!r} cites {[c.object_id for c in final.citations]}"
    return found[0]


def copy_the_animals_sentence(prompt: str) -> str:
    """What a faithful model says: the prompt's sentence on what lives in the pools, cited [1]."""
    found = re.search(r"[^.\n]*live in them[^.\n]*\.", prompt)
    return f"{found.group(0).strip()} [1]" if found else "I do not know."


def test_replicas_share_answers_in_redis_and_an_overwrite_drops_them(
    deployment: Any, redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from local_stack.stack import start_services

    cache = {"MMRAG_CACHE_REDIS_URL": redis_url, "MMRAG_LLM_FIRST_TOKEN_TIMEOUT_S": "60", **PROMPT_AS_TESTED}
    first = deployment.service("query_service", **cache)
    second_port = free_port()
    second = deployment.service(
        "query_service", "1", MMRAG_GRPC_PORT=str(second_port), MMRAG_REPLY_PARTITION="1", **cache
    )
    scripted = ScriptedLlm(copy_the_animals_sentence)  # a known, supported generation: the cache is what is tested
    scripted.start()
    request.addfinalizer(scripted.stop)
    llm_env = {
        **deployment.env(),
        "MMRAG_INSTANCE_ID": "llm_worker-0",
        "MMRAG_LLM_BACKEND": "openai",
        "MMRAG_LLM_BASE_URL": scripted.base_url,
    }
    llm = Service("llm_worker-0", "consumers.llm_worker", llm_env, deployment.state_dir / "logs")
    indexing = [deployment.service(n) for n in ("sqs_bridge", "normalizer", "text_embedder", "index_updater")]
    shards = [deployment.service("retrieval_worker", str(k), MMRAG_SHARD=str(k)) for k in range(deployment.shards)]
    replicas = (first, second)
    start_services(indexing + shards + [*replicas, llm])
    store = S3ObjectStore(deployment.s3_settings(), "test")
    for name, text in CORPUS.items():
        (tmp_path / name).write_text(text)
    upload_files(store, deployment.bucket, [tmp_path / n for n in CORPUS])
    oid = f"{deployment.bucket}/{ANSWERING}"
    every = [f"{deployment.bucket}/{name}" for name in CORPUS]
    for port in (deployment.grpc_port, second_port):
        wait_for(partial(all_indexed, port, every), 120, f"the corpus indexed as seen on {port}")

    sources, generated = ask(deployment.grpc_port)
    assert not generated.from_cache and not generated.is_degraded, generated.degraded_reason
    old_version = cited(generated, ANSWERING).version
    assert old_version == indexed_version(deployment.grpc_port, oid)
    shared_sources, shared = ask(second_port)
    assert shared.from_cache and shared_sources.from_cache, "the second replica answers from the shared cache"
    assert (shared.answer, list(shared.citations)) == (generated.answer, list(generated.citations))
    assert [s.object_id for s in shared_sources.sources] == [s.object_id for s in sources.sources]
    assert counted(second, "mmrag_cache_requests_total", 'outcome="hit"') == 1

    (tmp_path / ANSWERING).write_text(OVERWRITTEN)
    upload_files(store, deployment.bucket, [tmp_path / ANSWERING])
    wait_for(lambda: indexed_version(second_port, oid) not in ("", old_version), 120, "the overwrite to be indexed")
    wait_for(lambda: invalidations(replicas) >= 1, 30, "the entry to be dropped on the new index status")
    assert invalidations(replicas) == 1, "one replica dropped the entry (the other found it gone)"

    new_sources, renewed = ask(second_port)
    assert not renewed.from_cache and not new_sources.from_cache
    new_source = cited(renewed, ANSWERING)
    assert new_source.version != old_version and "Octopuses" in new_source.snippet, new_source
    assert not renewed.is_degraded, renewed.degraded_reason
    wait_for(
        lambda: indexed_version(deployment.grpc_port, oid) == new_source.version, 30, "the first replica to read it"
    )
    _, again = ask(deployment.grpc_port)
    assert again.from_cache and again.answer == renewed.answer and cited(again, ANSWERING).version == new_source.version


def invalidations(replicas: tuple[Service, ...]) -> float:
    return sum(counted(r, "mmrag_answer_cache_invalidations_total", "changed") for r in replicas)
