"""Ask's guardrails through the Asker itself, with in-memory stand-ins for retrieval and the LLM stream (the Kafka
path is tests/test_ask.py's): PII redacted in the streamed deltas and the final answer, an ungrounded answer replaced
by the extractive one, and "not found" under the minimum score without generating."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from mmrag.pb.events_pb2 import GenerateChunk, GenerateRequest, SearchHit
from mmrag.pb.query_pb2 import AskFinal
from mmrag.text_encoder import MiniLMEncoder
from query_service.ask import Asker, AskLimits
from query_service.eval_log import Client, EvalLog
from query_service.grounding import NOT_FOUND
from query_service.llm_breaker import LlmBreaker
from query_service.types import SearchOutcome, ShardHit

pytestmark = pytest.mark.unit
CHOIR = "The Orrin Valley choir has 42 members and rehearses every Thursday evening in the old mill."


class Encoder:
    """Zero query vectors (retrieval is a stand-in); the real MiniLM for the support check's sentences."""

    minilm = MiniLMEncoder()

    def encode(self, text: str, image: bytes) -> np.ndarray:
        return np.zeros(4, dtype=np.float32)

    def minilm_sentences(self, sentences: list[str]) -> np.ndarray:
        if not self.minilm.is_warm:
            self.minilm.warm_up()
        return np.asarray(self.minilm.encode(sentences))


class Search:
    space_id, shards, space_name = "space-1", 1, ""

    def __init__(self, score: float) -> None:
        self.score = score

    def search(self, vector: Any, top_k: int, timeout: float, text: str, scope: Any = None) -> SearchOutcome:
        hit = SearchHit(vector_id="b/choir#0", object_id="b/choir", score=self.score, text=CHOIR, has_text=True)
        return SearchOutcome([ShardHit(hit, 0)], [], [])


class Generation:
    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces
        self.requests: list[GenerateRequest] = []

    def stream(self, request: GenerateRequest, deadline: float) -> Iterator[GenerateChunk]:
        self.requests.append(request)
        for seq, piece in enumerate(self.pieces):
            yield GenerateChunk(seq=seq, text=piece)
        yield GenerateChunk(seq=len(self.pieces), final=True, finish_reason="stop", sources_given=1)


class Records(EvalLog):
    """The records an Ask hands to its eval log (the log's own Kafka path: tests/test_eval_log.py)."""

    def __init__(self) -> None:
        self.written: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.written.append(record)


def run(
    pieces: list[str],
    score: float = 0.9,
    min_score: float = 0.3,
    records: Records | None = None,
    question: str = "How many members has the choir? I am bob@example.com",
) -> tuple[list[str], AskFinal, Generation]:
    generation = Generation(pieces)
    limits = AskLimits(2.0, 10.0, 5, 2, 64, min_score)
    breaker = LlmBreaker(3, 10.0)
    asker = Asker(limits, Encoder(), Search(score), generation, breaker, None, records)  # type: ignore[arg-type]
    deltas, final = [], AskFinal()
    PROVISIONAL.clear()
    for event in asker.ask(question, 5, 0, None, Client("ipv4:10.0.0.7:4242", {"x-client-id": "nb-1"})):
        if event.WhichOneof("event") == "delta":
            (PROVISIONAL if event.delta.provisional else deltas).append(event.delta.text)
        elif event.WhichOneof("event") == "final":
            final = event.final
    return deltas, final, generation


PROVISIONAL: list[str] = []  # the last run's provisional (generated, unchecked) deltas


def test_pii_split_across_deltas_never_reaches_the_client() -> None:
    deltas, final, _ = run(
        ["The choir has 42 members [1]. Mail jane", ".doe@exa", "mple.org or pay 4111 1111", " 1111 1111."]
    )
    streamed = "".join(PROVISIONAL)
    assert streamed == "The choir has 42 members [1]. Mail [email redacted] or pay [card redacted]."
    assert all("jane" not in d and "4111" not in d for d in PROVISIONAL + deltas)
    # the mail sentence is in no source: the answer is the extractive one, never the generated text
    assert final.is_degraded and final.answer == "".join(deltas) == f"{CHOIR} [1]"


def test_a_supported_answer_is_given_with_the_system_citation_of_each_sentence() -> None:
    deltas, final, _ = run(["The choir has ", "42 members [3]."])  # [3] was never given: the system cites
    assert PROVISIONAL == ["The choir has ", "42 members [3]."], "generated text streams as provisional"
    assert deltas == ["The choir has 42 members. [1]"] and final.answer == deltas[0] and not final.is_degraded
    assert [c.object_id for c in final.citations] == ["b/choir"] and final.citations_inferred


def test_a_wrong_number_is_never_given_as_the_answer() -> None:
    deltas, final, _ = run(["The choir has 24 members [1]."])
    assert final.is_degraded and final.degraded_reason == "ungrounded"
    assert final.answer == "".join(deltas) == f"{CHOIR} [1]"


def test_an_ungrounded_answer_falls_back_to_the_extractive_one() -> None:
    deltas, final, _ = run(["The capital of Zentara ", "is New Zentra [4]."])
    assert final.is_degraded and final.degraded_reason == "ungrounded"
    assert final.answer == f"{CHOIR} [1]" and deltas == [final.answer]
    assert [c.number for c in final.citations] == [1]


def test_a_looping_answer_is_cut_short_and_replaced_by_the_extractive_one() -> None:
    # greedy decoding of a small model can repeat one word to the token limit, citing a source on the way
    deltas, final, _ = run(["The choir [1] has ", *["Kafka "] * 200, "members."])
    assert "".join(PROVISIONAL).count("Kafka") < 20, "the loop is not read to its end"
    assert final.is_degraded and final.degraded_reason == "ungrounded" and final.finish_reason == "repetition"
    assert final.answer == f"{CHOIR} [1]"


def test_a_sentence_repeated_to_the_token_limit_is_not_an_answer() -> None:
    deltas, final, _ = run(["The choir has 42 members [1]. "] * 25)
    assert final.is_degraded and final.degraded_reason == "ungrounded"
    assert final.answer == f"{CHOIR} [1]"


def test_an_ungrounded_answer_to_a_question_no_source_speaks_of_is_not_found() -> None:
    # retrieval scored over the minimum (a small corpus' best hit for anything), the model made an answer up, and no
    # sentence of the sources answers the question: quoting the top source would answer something else
    deltas, final, _ = run(["The 2018 World Cup was won by ", "Brazil."], question="Who won the 2018 FIFA World Cup?")
    assert final.is_degraded and final.degraded_reason == "ungrounded"
    assert final.answer == NOT_FOUND and not final.citations and deltas == [NOT_FOUND]


def test_under_the_minimum_score_the_answer_is_not_found_without_generating() -> None:
    deltas, final, generation = run(["never asked"], score=0.2, min_score=0.3)
    assert deltas == [NOT_FOUND] and final.answer == NOT_FOUND
    assert generation.requests == [] and not final.citations


def test_each_ask_hands_one_redacted_record_to_the_eval_log() -> None:
    records = Records()
    question = "How many members has the choir? I am bob@example.com, call me on 415-555-2671"
    _, final, generation = run(["The choir has 42 members [1]."], records=records, question=question)
    [record] = records.written
    assert record["request_id"] == generation.requests[0].correlation_id
    assert record["question"] == "How many members has the choir? I am [email redacted], call me on [phone redacted]"
    assert record["answer"] == final.answer == "The choir has 42 members. [1]"
    assert record["redactions"] == {"email": 1, "phone": 1}
    assert record["client"] == {"peer": "ipv4:10.0.0.7:4242", "x-client-id": "nb-1"}
    assert record["retrieved"] == [{"object_id": "b/choir", "vector_id": "b/choir#0", "score": pytest.approx(0.9)}]
    assert record["citations"] == [{"number": 1, "object_id": "b/choir"}] and record["space_id"] == "space-1"
    assert not record["degraded"] and record["timings_ms"]["total"] > 0
