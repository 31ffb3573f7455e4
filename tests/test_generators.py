"""The Generator port's contract, run against both adapters: llama.cpp in-process and an OpenAI-compatible HTTP
server (llama-cpp-python's own `llama_cpp.server`, started here on loopback over the same GGUF)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.llm_worker.generator import ChatMessage, Delta, GenerationError, GenerationParams, Generator
from consumers.llm_worker.llama_cpp_generator import LlamaCppGenerator
from consumers.llm_worker.models import DEFAULT_MODEL, packaged_model
from consumers.llm_worker.openai_generator import OpenAIGenerator
from local_stack.processes import free_port
from query_service.sources import INSTRUCTION
from tests.llama_server import llama_server

SOURCE = "[1] harbour-notes.md\nThe lighthouse of Port Velmar was repainted bright green in 1987 after a storm.\n\n"
QUESTION = (
    "Question: What colour is the lighthouse of Port Velmar?\nAnswer using the sources above, citing them as [n]."
)
MESSAGES = [ChatMessage("system", INSTRUCTION), ChatMessage("user", "Sources:\n\n" + SOURCE + QUESTION)]


@pytest.fixture(scope="module")
def llama_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with llama_server(tmp_path_factory.mktemp("llama-server") / "server.log") as base:
        yield base


@pytest.fixture(scope="module", params=["llamacpp", "openai"])
def generator(request: pytest.FixtureRequest) -> Generator:
    if request.param == "llamacpp":
        gen: Generator = LlamaCppGenerator(DEFAULT_MODEL, threads=1, context_tokens=2048)
    else:
        system_role = packaged_model(DEFAULT_MODEL).system_role
        gen = OpenAIGenerator(request.getfixturevalue("llama_server_url"), "", "", 2048, 60, system_role=system_role)
    gen.warm_up()
    return gen


def collect(gen: Generator, params: GenerationParams, cancel: threading.Event | None = None) -> list[Delta]:
    deltas = []
    for delta in gen.stream(MESSAGES, params, cancel):
        deltas.append(delta)
        if cancel is not None and delta.text:
            cancel.set()
    return deltas


def test_streams_an_answer_from_the_source_with_counts(generator: Generator) -> None:
    deltas = collect(generator, GenerationParams(max_tokens=48))
    *pieces, last = deltas
    answer = "".join(d.text for d in pieces)
    assert len(pieces) > 2 and all(d.text and not d.finish_reason for d in pieces), "streamed piece by piece"
    assert "green" in answer.lower(), answer
    assert last.text == "" and last.finish_reason in ("stop", "length")
    assert last.completion_tokens > 0 and last.prompt_tokens > 40


def test_greedy_decoding_repeats_and_max_tokens_caps(generator: Generator) -> None:
    first = collect(generator, GenerationParams(max_tokens=6))
    again = collect(generator, GenerationParams(max_tokens=6))
    assert [d.text for d in first] == [d.text for d in again]
    assert first[-1].finish_reason == "length" and first[-1].completion_tokens == 6


def test_cancel_stops_the_stream_early(generator: Generator) -> None:
    deltas = collect(generator, GenerationParams(max_tokens=48), threading.Event())
    assert deltas[-1].finish_reason == "cancelled" and len(deltas) <= 3


def test_tokens_are_counted(generator: Generator) -> None:
    short, long = generator.count_tokens("green"), generator.count_tokens("green " * 50)
    assert 0 < short < long <= 60 * short
    assert generator.context_tokens == 2048


def test_an_unreachable_server_fails_warm_up_naming_it(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(GenerationError, match=f"{base}/models"):
        OpenAIGenerator(base, "", "", 2048, timeout_s=2).warm_up()
