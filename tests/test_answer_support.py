"""Ask's support check with the real MiniLM encoder: an answer is the answer only when each sentence is said by a
source (numbers included), with the system's citation per sentence; the extractive answer picks the source
sentences that answer the question, or none ("not found")."""

from __future__ import annotations

import numpy as np
import pytest

from mmrag.pb.events_pb2 import SearchHit
from mmrag.text_encoder import MiniLMEncoder
from query_service.sources import select_sources
from query_service.support import SupportChecker, facts, repetition, split_sentences
from query_service.types import ShardHit

pytestmark = pytest.mark.unit
CHOIR = "The Orrin Valley choir has 42 members and rehearses every Thursday evening in the old mill."
CODE = "The access code for the server room is 4417. The server room is on the third floor next to the kitchen."
KAFKA = (
    "# Kafka consumer groups\nA consumer group is a set of processes that share the work of reading a topic.\n"
    "Kafka assigns every partition of\nthe topic to exactly one member of the group, so adding members spreads "
    "the partitions across more processes."
)


@pytest.fixture(scope="module")
def checker() -> SupportChecker:
    encoder = MiniLMEncoder()
    encoder.warm_up()
    return SupportChecker(lambda texts: np.asarray(encoder.encode(texts)), support_min=0.6, answer_min=0.65)


def sources_of(*texts: str) -> list:  # type: ignore[type-arg]
    hits = [
        ShardHit(SearchHit(vector_id=f"b/d{i}#0", object_id=f"b/d{i}", score=0.9 - i / 10, text=t, has_text=True), 0)
        for i, t in enumerate(texts)
    ]
    return select_sources(hits, max_sources=5, chunks_per_source=1)


def test_sentences_split_at_ends_and_items_not_at_a_wrapped_line() -> None:
    assert split_sentences(KAFKA) == [
        "Kafka consumer groups",
        "A consumer group is a set of processes that share the work of reading a topic.",
        "Kafka assigns every partition of the topic to exactly one member of the group, so adding members spreads "
        "the partitions across more processes.",
    ]
    assert split_sentences("- one item\n- two items. Then prose.") == ["one item", "two items.", "Then prose."]


def test_facts_and_loops_of_any_length() -> None:
    assert facts("The code is 4417, see F-2307 and v2.1.") == {"4417", "f-2307", "v2.1"}
    assert repetition(["The choir sings.", "It has 42 members.", "The choir sings."]) is not None
    looping = "The answer is in the sources and the answer is in the sources and the answer is in the sources"
    assert repetition([looping]) is not None
    assert repetition(["The choir has 42 members.", "It rehearses on Thursdays."]) is None


def test_a_supported_answer_gets_the_system_citation_of_each_sentence(checker: SupportChecker) -> None:
    sources = sources_of("Sourdough bread rises with a starter of wild yeast.", CHOIR)
    verdict = checker.check("How many members has the choir?", "The choir has 42 members [1].", sources)
    assert verdict.supported, verdict.problem
    assert verdict.sentences == [("The choir has 42 members.", 2)]  # source 2 says it, whatever the model cited
    assert verdict.cited() == "The choir has 42 members. [2]"


def test_a_wrong_number_an_invented_fact_or_a_file_list_is_not_supported(checker: SupportChecker) -> None:
    code = sources_of(CODE)
    wrong = checker.check("What is the access code of the server room?", "The access code is 42 [1].", code)
    assert not wrong.supported and "42" in (wrong.problem or "")
    invented = checker.check("How many members has the choir?", "The capital of Zentara is New Zentra.", code)
    assert not invented.supported
    files = checker.check("How do groups share partitions?", "kafka-consumer-groups.md [1], tide-pools.md [2]", code)
    assert not files.supported
    denial = sources_of(CHOIR)
    said = checker.check("How many members?", "The sources do not say how many members the choir has.", denial)
    assert not said.supported


def test_a_repeated_sentence_is_not_an_answer_even_when_each_copy_is_supported(checker: SupportChecker) -> None:
    sources = sources_of(CHOIR)
    looped = " ".join(["The choir has 42 members [1]."] * 6)
    verdict = checker.check("How many members has the choir?", looped, sources)
    assert not verdict.supported and "repeats" in (verdict.problem or "")


def test_a_supported_answer_to_another_question_is_not_an_answer(checker: SupportChecker) -> None:
    sources = sources_of(CHOIR)
    verdict = checker.check("Who won the 2018 FIFA World Cup?", "The choir rehearses every Thursday evening.", sources)
    assert not verdict.supported and "do not answer" in (verdict.problem or "")


def test_the_extractive_answer_is_the_sentence_that_answers_or_not_found(checker: SupportChecker) -> None:
    sources = sources_of(CHOIR, KAFKA)
    answer = checker.extract("How do Kafka consumer groups share the partitions of a topic?", sources)
    assert answer.startswith("Kafka assigns every partition of the topic to exactly one member") and "[2]" in answer
    assert "of [2] the topic" not in answer  # a wrapped line is not a sentence end
    assert checker.extract("Who won the 2018 FIFA World Cup?", sources) == ""
    assert checker.extract("What is the access code of the server room?", sources_of(CHOIR)) == ""
    assert checker.extract("What is the access code of the server room?", sources_of(CODE)).startswith(
        "The access code for the server room is 4417. [1]"
    )


def test_the_sentence_that_holds_what_the_question_asks_for_wins() -> None:
    from query_service.support import answer_type, type_fit

    assert answer_type("Who conducts the choir?") == "name" and answer_type("When does it leave?") == "time"
    assert answer_type("How many members?") == "number" and answer_type("What does it cost?") == "money"
    assert answer_type("Is there a ferry to Norvik?") is None
    assert type_fit("name", "Who conducts the choir?", "Its conductor is Marta Velasquez.") == 1
    assert type_fit("name", "Who designed the Ashgrove tower?", "The Ashgrove tower is 31 metres tall.") == -1
    assert type_fit("time", "When does the ferry leave?", "It leaves at 7:40 every morning.") == 1


def test_who_is_answered_by_the_sentence_with_the_name(checker: SupportChecker) -> None:
    choir = "The Orrin Valley choir has 42 members. It rehearses in the old mill, and its conductor is Marta Velasquez."
    answer = checker.extract("Who conducts the Orrin Valley choir?", sources_of(choir))
    assert "Marta Velasquez" in answer


def test_a_number_about_something_else_or_an_answer_without_what_was_asked_is_not_supported(
    checker: SupportChecker,
) -> None:
    lighthouse = sources_of("The Kestrel Point lighthouse flashes white every 12 seconds.")
    question = "How many lighthouses are on the Kestrel coast?"
    moved = checker.check(question, "The Kestrel coast has 12 lighthouses. [1]", lighthouse)
    assert not moved.supported and "12" in (moved.problem or "")
    printer = sources_of("The office printer on floor two is called Heron.")
    unnamed = checker.check(
        "What is the name of the printer on floor two?", "The printer is the bench/printer.", printer
    )
    assert not unnamed.supported and "name" in (unnamed.problem or "")
    named = checker.check("What is the name of the printer on floor two?", "The printer is called Heron [1].", printer)
    assert named.supported, named.problem


def test_how_many_wants_a_count_of_that_thing() -> None:
    from query_service.support import type_fit

    question = "How many lighthouses are on the Kestrel coast?"
    assert type_fit("number", question, "The Kestrel Point lighthouse flashes white every 12 seconds.") == -1
    assert type_fit("number", question, "There are 3 lighthouses on the coast.") == 1
    assert type_fit("number", "How many members does it have?", "The choir has 42 active members.") == 1
