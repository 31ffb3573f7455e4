"""`mmrag ask` against an in-process gRPC server that streams a canned Ask (the real query service's stream is
tests/test_llm_outage.py's): with --json, stdout is one JSON object holding the question, the answer, whether it is
degraded and why, the citations with their object ids, the sources, the timings and from_cache, nothing else; on a
terminal, provisional text is shown apart from the answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from rich.console import Console

from mmrag.pb import query_pb2, query_pb2_grpc
from operator_cli.ask import stream_answer
from operator_cli.main import main

pytestmark = pytest.mark.unit
QUESTION = "Which animals live in tide pools?"
TIDE = query_pb2.AskSource(
    number=1, object_id="docs/tide-pools.md", snippet="Tide pools are rocky pools", score=0.61, modality="text"
)
BREAD = query_pb2.AskSource(
    number=2, object_id="docs/sourdough.md", snippet="Sourdough bread rises", score=0.12, modality="text"
)


class CannedAsk(query_pb2_grpc.QueryServiceServicer):
    """Streams one answer the way the query service does: sources, generated text as provisional deltas, the
    answer as one delta (here the extractive one: the generated text was not supported), the final message."""

    def __init__(self) -> None:
        self.asked: list[query_pb2.AskRequest] = []

    def Ask(self, request: query_pb2.AskRequest, context: Any) -> Iterator[query_pb2.AskResponse]:  # noqa: N802
        self.asked.append(request)
        answer = "Sea anemones, starfish, crabs and small fish live in them [1]."
        yield query_pb2.AskResponse(sources=query_pb2.AskSources(sources=[TIDE, BREAD], space_id="space-1"))
        for text in ("Whales live ", "in tide pools."):
            yield query_pb2.AskResponse(delta=query_pb2.AskDelta(text=text, provisional=True))
        yield query_pb2.AskResponse(delta=query_pb2.AskDelta(text=answer))
        timings = query_pb2.AskTimings(retrieve_ms=41.5, first_token_ms=12.0, total_ms=57.25)
        final = query_pb2.AskFinal(
            answer=answer, citations=[TIDE], timings=timings, is_degraded=True, degraded_reason="ungrounded"
        )
        yield query_pb2.AskResponse(final=final)


@pytest.fixture
def target() -> Iterator[tuple[str, CannedAsk]]:
    servicer = CannedAsk()
    server = grpc.server(ThreadPoolExecutor(2))
    query_pb2_grpc.add_QueryServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(0)


def test_ask_json_prints_one_object_with_the_answer_its_citations_sources_and_timings(
    target: tuple[str, CannedAsk], capsys: pytest.CaptureFixture[str]
) -> None:
    address, servicer = target
    code = main(["ask", QUESTION, "--json", "--top-k", "4", "--target", address])
    out = capsys.readouterr().out
    assert code == 0
    answer = json.loads(out)  # the whole of stdout: one JSON object, no table, no streamed text around it
    assert servicer.asked[0].question == QUESTION and servicer.asked[0].top_k == 4
    assert answer["question"] == QUESTION
    assert answer["answer"] == "Sea anemones, starfish, crabs and small fish live in them [1]."
    assert answer["is_degraded"] is True and answer["degraded_reason"] == "ungrounded"
    assert [(c["number"], c["object_id"]) for c in answer["citations"]] == [(1, "docs/tide-pools.md")]
    assert [s["object_id"] for s in answer["sources"]] == ["docs/tide-pools.md", "docs/sourdough.md"]
    assert answer["sources"][0]["score"] == pytest.approx(0.61)
    assert answer["timings"] == {"retrieve_ms": 41.5, "first_token_ms": 12.0, "total_ms": 57.25}
    assert answer["from_cache"] is False and answer["model"] == ""
    assert answer["retrieval"]["space_id"] == "space-1" and answer["retrieval"]["partial"] is False


def test_on_a_terminal_the_provisional_text_is_shown_apart_from_the_answer(target: tuple[str, CannedAsk]) -> None:
    address, _ = target
    terminal = Console(record=True, width=200)
    final = stream_answer(address, QUESTION, top_k=4, timeout_s=10, console=terminal)
    lines = terminal.export_text().splitlines()
    assert "generating: Whales live in tide pools." in lines
    assert f"answer: {final.answer}" in lines
    assert "cited: [1] docs/tide-pools.md" in lines


def test_ask_json_of_an_unreachable_service_is_one_error_line_and_no_json(capsys: pytest.CaptureFixture[str]) -> None:
    from local_stack.processes import free_port

    code = main(["ask", QUESTION, "--json", "--timeout", "2", "--target", f"127.0.0.1:{free_port()}"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert "not reachable" in captured.err and "MMRAG_QUERY_TARGET" in captured.err
