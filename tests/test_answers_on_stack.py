"""Answers people can trust, on the real stack (Kafka, local S3, milvus-lite, every deployable as a process) with a
scripted model behind the LLM worker's HTTP backend, so each generation is known: a supported answer is given with
the system's citation; a wrong number, a loop or an answer to a fact in no document is never shown nor cached; and
after an overwrite or a delete is reported (GetObjectStatus), neither Search nor Ask answers from the old version,
whatever the result cache and the answer cache held."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench.answer_set import DOCS
from local_stack.services import Service
from mmrag.object_store import S3ObjectStore
from mmrag.pb import query_pb2, query_pb2_grpc
from query_service.grounding import NOT_FOUND
from tests.ask_tools import Asked, ask, llm_worker, start_with_corpus
from tests.kafka_tools import wait_for
from tests.object_events import metric
from tests.scripted_llm import ScriptedLlm, scripted_llm

pytestmark = pytest.mark.kafka

CORPUS = {name: DOCS[name] for name in ("server-room.md", "choir.md", "ferry.md", "clock-tower.md")}
CODE_QUESTION = "What is the access code of the server room?"
SERVER_ROOM = "server-room.md"
NEW_TEXT = "The access code for the server room is 9051. The server room is on the third floor, next to the kitchen."
BOATHOUSE = "boathouse.md"
BOATHOUSE_TEXT = "The boathouse by the lake opens at 6:15 on weekdays. Rowing boats are lent for two hours at a time."
BOATHOUSE_QUESTION = "When does the boathouse open?"
STORES = "mmrag_answer_cache_stores_total"


def copy_the_code_sentence(prompt: str) -> str:
    """What a faithful model would say: the prompt's sentence about the access code, cited [1]."""
    found = re.search(r"[^.\n]*access code[^.\n]*\.", prompt)
    return f"{found.group(0).strip()} [1]" if found else "I do not know."


def copy_the_opening_sentence(prompt: str) -> str:
    found = re.search(r"[^.\n]*boathouse[^.\n]*opens at[^.\n]*\.", prompt)
    return f"{found.group(0).strip()} [1]" if found else "I do not know."


SCRIPTS = {
    CODE_QUESTION: copy_the_code_sentence,
    BOATHOUSE_QUESTION: copy_the_opening_sentence,
    "What is the Wi-Fi password of the server room?": lambda p: "The Wi-Fi password of the server room is hunter2 [1].",
    "How many members does the Orrin Valley choir have?": lambda p: "The choir has 24 members [1].",
    "When does the ferry from Lindholm to Skarra leave?": lambda p: "The ferry leaves at 7:40 every morning [1]. " * 12,
}


def reply(prompt: str) -> str:
    question = prompt.rsplit("Question:", 1)[-1].split("\n")[0].strip()
    return SCRIPTS.get(question, lambda p: "I do not know.")(prompt)


@pytest.fixture
def stack(deployment: Any, tmp_path: Path) -> Iterator[tuple[Any, ScriptedLlm, Service]]:
    with scripted_llm(reply) as llm:
        worker = llm_worker(deployment, MMRAG_LLM_BACKEND="openai", MMRAG_LLM_BASE_URL=llm.base_url)
        query = deployment.service("query_service", MMRAG_RESULT_CACHE_TTL_S="300", MMRAG_ANSWER_CACHE_TTL_S="300")
        start_with_corpus(deployment, CORPUS, "server room choir ferry clock tower", tmp_path, [query, worker])
        yield deployment, llm, query


def status(port: int, oid: str) -> query_pb2.ObjectStatusResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        return stub.GetObjectStatus(query_pb2.ObjectStatusRequest(object_id=oid), timeout=10)


def search_texts(port: int, text: str) -> dict[str, str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = query_pb2_grpc.QueryServiceStub(channel).Search(query_pb2.SearchQuery(text=text, top_k=5), timeout=10)
    return {r.object_id: r.text for r in reply.results}


def final_of(asked: Asked) -> query_pb2.AskFinal:
    assert asked.final is not None, asked.order
    return asked.final


def test_only_supported_answers_are_given_and_cached(stack: tuple[Any, ScriptedLlm, Service]) -> None:
    deployment, llm, query = stack
    port, bucket = deployment.grpc_port, deployment.bucket
    supported = final_of(ask(port, CODE_QUESTION))
    assert not supported.is_degraded, supported.degraded_reason
    assert supported.answer.startswith("The access code for the server room is 4417.")
    assert [c.object_id for c in supported.citations] == [f"{bucket}/{SERVER_ROOM}"], "the system cites"
    asked_before = len(llm.prompts)
    again = final_of(ask(port, CODE_QUESTION))
    assert again.from_cache and again.answer == supported.answer and len(llm.prompts) == asked_before
    asked_at_once_after_an_upload(deployment, query)

    for question, wrong in (
        ("What is the Wi-Fi password of the server room?", "hunter2"),  # a fact in no document
        ("How many members does the Orrin Valley choir have?", "24"),  # a wrong number
        ("When does the ferry from Lindholm to Skarra leave?", None),  # one sentence repeated 12 times
    ):
        first = ask(port, question)
        final = final_of(first)
        assert final.is_degraded and final.degraded_reason == "ungrounded", (question, final.answer)
        if wrong:
            assert wrong in "".join(first.provisional) and wrong not in final.answer, "never shown as the answer"
        assert "".join(first.deltas) == final.answer
        second = final_of(ask(port, question))
        assert not second.from_cache, f"an unsupported answer was cached: {question}"
    assert final_of(ask(port, "What is the Wi-Fi password of the server room?")).answer == NOT_FOUND
    ferry = final_of(ask(port, "When does the ferry from Lindholm to Skarra leave?"))
    assert "7:40" in ferry.answer and ferry.answer.count("7:40") == 1, "the extractive answer, said once"
    assert [c.object_id for c in ferry.citations] == [f"{bucket}/ferry.md"]


def asked_at_once_after_an_upload(deployment: Any, query: Service) -> None:
    """Asked the moment Search finds a new document (its INDEXED status may not be read yet: statuses follow the
    apply), the answer is stored once the status view reads the status, and the same question is answered from the
    cache."""
    port, bucket = deployment.grpc_port, deployment.bucket
    stored = metric(query.probe_url, STORES, outcome="stored")
    S3ObjectStore(deployment.s3_settings(), "test").put(bucket, BOATHOUSE, BOATHOUSE_TEXT.encode(), "text/markdown")
    tries = itertools.count()  # a new text each time: the result cache must not answer

    def found() -> bool:
        return f"{bucket}/{BOATHOUSE}" in search_texts(port, f"boathouse opening hours {next(tries)}")

    wait_for(found, 120, "the new document to be found by Search")
    fresh = final_of(ask(port, BOATHOUSE_QUESTION))
    assert fresh.answer.startswith("The boathouse by the lake opens at 6:15") and not fresh.from_cache, fresh
    wait_for(lambda: metric(query.probe_url, STORES, outcome="stored") > stored, 30, "it stored")
    deferred = metric(query.probe_url, STORES, outcome="deferred")
    print(f"\nasked the moment Search found it: {deferred:.0f} answer(s) waited for their sources' statuses")
    again = final_of(ask(port, BOATHOUSE_QUESTION))
    assert again.from_cache and again.answer == fresh.answer, f"answered again ({deferred:.0f} deferred so far)"


def test_nothing_stale_after_an_overwrite_or_a_delete_is_reported(stack: tuple[Any, ScriptedLlm, Service]) -> None:
    deployment, _, _ = stack
    port, bucket = deployment.grpc_port, deployment.bucket
    oid = f"{bucket}/{SERVER_ROOM}"
    old = status(port, oid).version
    assert "4417" in final_of(ask(port, CODE_QUESTION)).answer  # the answer cache holds it now
    assert "4417" in search_texts(port, "server room access code")[oid]  # and the result cache this Search
    store = S3ObjectStore(deployment.s3_settings(), "test")
    store.put(bucket, SERVER_ROOM, NEW_TEXT.encode(), "text/markdown")
    wait_for(lambda: (s := status(port, oid)).state == "indexed" and s.version != old, 120, "the overwrite indexed")
    # the moment the status says so: Search and Ask give the new version, and never the old one
    found = search_texts(port, "server room access code")
    assert "9051" in found[oid] and "4417" not in found[oid]
    renewed = final_of(ask(port, CODE_QUESTION))
    assert "9051" in renewed.answer and "4417" not in renewed.answer and not renewed.from_cache
    assert [c.version for c in renewed.citations] == [status(port, oid).version]

    store.delete(bucket, SERVER_ROOM)
    wait_for(lambda: status(port, oid).state == "deleted", 120, "the delete to be reported")
    assert oid not in search_texts(port, "server room access code")
    gone = final_of(ask(port, CODE_QUESTION))
    assert "9051" not in gone.answer and all(c.object_id != oid for c in gone.citations)
