"""Ask end to end with the LLM worker on its OpenAI-compatible HTTP backend, against llama-cpp-python's own
`llama_cpp.server` over the default GGUF (real broker, real model): the streamed, cited answer of tests/test_ask.py
through HTTP; a question about nothing in the corpus answered "not found" without any GenerateRequest; an answer
that copies an e-mail address and a card number from its source comes back redacted in the stream, the final
answer and the evaluation log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.ask_tools import (
    CORPUS,
    PROMPT_AS_TESTED,
    Asked,
    ask,
    assert_answered_from_sources,
    llm_worker,
    start_with_corpus,
)
from tests.kafka_tools import read_topic, wait_for
from tests.llama_server import llama_server
from tests.test_ask import ANSWERING, QUESTION

pytestmark = pytest.mark.kafka

# SmolLM2-135M copies this sentence whole when asked for the contact details (the e-mail's domain sometimes comes
# out as example.com): an answer that carries both kinds of PII.
CONTACT = "The contact details of Jane Doe are jane.doe@example.org and 4539 1488 0343 6467."
PII_QUESTION = "What are the contact details of Jane Doe?"
RAW_PII = ("jane.doe@", "4539 1488", "4539148803436467")
OFF_TOPIC = "Who won the football world cup in 1998?"  # best score 0.003 on this corpus, under the default 0.12
NOT_FOUND_START = "Not found in the indexed documents"


def streamed(asked: Asked) -> str:
    return "".join(asked.deltas)


def eval_records(bootstrap: str, prefix: str, count: int) -> dict[str, dict[str, Any]]:
    """The eval-log records by question, once ``count`` have landed."""
    landed = wait_for(
        lambda: len(found := read_topic(bootstrap, f"{prefix}eval-log.v1", idle_s=1)) >= count and found,
        30,
        f"{count} eval-log records",
    )
    records = [json.loads(r.value or b"") for r in landed]
    return {r["question"]: r for r in records}


def request_keys(bootstrap: str, prefix: str) -> list[str | None]:
    return [r.key for r in read_topic(bootstrap, f"{prefix}llm.requests.v1", idle_s=1)]


def test_http_backend_streams_not_found_never_generates_and_pii_is_redacted(
    deployment, bootstrap: str, tmp_path: Path
) -> None:
    prefix = deployment.topic_prefix
    with llama_server(tmp_path / "llama-server.log") as base_url:
        worker = llm_worker(deployment, MMRAG_LLM_BACKEND="openai", MMRAG_LLM_BASE_URL=base_url)
        query = deployment.service("query_service", MMRAG_LLM_FIRST_TOKEN_TIMEOUT_S="60", **PROMPT_AS_TESTED)
        corpus = {**CORPUS, "contact.md": CONTACT}
        start_with_corpus(deployment, corpus, "tide pools sea anemones", tmp_path, [query, worker])
        port = deployment.grpc_port

        answered = ask(port, QUESTION)  # the streaming test of the llama.cpp worker, through HTTP
        assert_answered_from_sources(answered, ANSWERING)

        asked_before = request_keys(bootstrap, prefix)
        assert len(asked_before) == 1, "one GenerateRequest so far: the answered question's"
        not_found = ask(port, OFF_TOPIC)
        final = not_found.final
        assert final is not None and final.answer.startswith(NOT_FOUND_START) and streamed(not_found) == final.answer
        assert not_found.sources and max(s.score for s in not_found.sources) < 0.12, "sources are still shown"
        assert not final.citations and not final.model and final.completion_tokens == 0

        pii = ask(port, PII_QUESTION, timeout_s=120)
        answer = streamed(pii)
        assert pii.final is not None and pii.sources[0].object_id.endswith("contact.md")
        assert not any(raw in answer or raw in pii.final.answer for raw in RAW_PII), answer
        counts = {"email": answer.count("[email redacted]"), "card": answer.count("[card redacted]")}
        assert counts["email"] >= 1 and counts["card"] >= 1, f"the answer copied both: {answer!r}"

        records = eval_records(bootstrap, prefix, 3)
        asked_after = request_keys(bootstrap, prefix)
        assert records[OFF_TOPIC]["request_id"] not in asked_after, "no GenerateRequest for the not-found question"
        assert len(asked_after) == 2 and records[PII_QUESTION]["request_id"] in asked_after
        assert records[OFF_TOPIC]["answer"] == final.answer and records[OFF_TOPIC]["model"] == ""

        record = records[PII_QUESTION]
        assert record["answer"] == pii.final.answer and record["redactions"] == counts
        logged = json.dumps(list(records.values())) + query.log_path.read_text()
        assert not any(raw in logged for raw in RAW_PII), "neither the eval log nor the query service's log keeps PII"
