"""Ask's pure parts: sources from hits, citations, the extractive answer, prompt trimming, the breaker's rules."""

from __future__ import annotations

import time

import pytest

from consumers.llm_worker.prompt import build_prompt, trim_to_tokens
from mmrag.pb.events_pb2 import GenerateRequest, PromptSource, SearchHit
from query_service.grounding import degenerate, nothing_relevant
from query_service.llm_breaker import LlmBreaker, LlmUnavailableError
from query_service.sources import SNIPPET_CHARS, cited_numbers, focus, select_sources
from query_service.types import ShardHit

pytestmark = pytest.mark.unit


def hit(object_id: str, score: float, text: str, chunk: int = 0, image: bool = False) -> ShardHit:
    return ShardHit(
        SearchHit(
            vector_id=f"{object_id}#{chunk}",
            object_id=object_id,
            score=score,
            text=text,
            chunk_index=chunk,
            char_start=chunk * 100,
            char_end=chunk * 100 + len(text),
            has_text=bool(text),
            has_image=image,
        ),
        0,
    )


def words(text: str) -> int:
    return len(text.split())


def test_sources_are_one_per_object_best_first_with_chunks_in_reading_order() -> None:
    hits = [
        hit("b/doc-a", 0.9, "second chunk of a.", chunk=1),
        hit("b/img.png", 0.8, "STOP sign", image=True),
        hit("b/doc-a", 0.7, "first chunk of a.", chunk=0),
        hit("b/doc-a", 0.65, "first chunk of a.", chunk=0),  # the same text again (another space's row)
        hit("b/doc-a", 0.6, "third chunk of a.", chunk=2),
        hit("b/doc-b", 0.5, "only chunk of b."),
    ]
    sources = select_sources(hits, max_sources=2, chunks_per_source=2)
    assert [(s.number, s.best.object_id, s.modality) for s in sources] == [
        (1, "b/doc-a", "text"),
        (2, "b/img.png", "image"),
    ]
    assert sources[0].text == "first chunk of a.\n…\nsecond chunk of a."
    assert sources[0].best.chunk_index == 1 and sources[0].ask_source().char_start == 100
    assert sources[1].text == "An image file named img.png. Text in the image: STOP sign"
    assert sources[1].prompt_source().label == "image b/img.png"
    assert sources[1].prompt_source(with_bucket=False).label == "image img.png"


def test_a_long_source_is_focused_on_the_question_within_its_word_budget() -> None:
    text = (
        "Tide pools form on rocky shores. Sea stars cling to the rocks there. "
        "A Kafka consumer group splits the partitions of a topic between its members. "
        "Bread needs flour, water and salt. Each partition is read by one member of the group at a time."
    )
    question = "how does a consumer group split partitions between members"
    focused = focus(text, question, 30)
    assert words(focused) <= 31  # the budget, and at most one gap mark
    assert "splits the partitions of a topic between its members" in focused
    assert "Each partition is read by one member of the group" in focused
    assert "Bread" not in focused and focused.startswith("… A Kafka")  # reading order, cuts marked
    assert focus(text, question, 0) == text and focus(text, question, 200) == text
    first_words = focus("word " * 50, "nothing matches", 10)
    assert words(first_words) == 11 and first_words.endswith("…")  # one over-long sentence: its first words
    long = [hit("b/doc.txt", 0.9, text)]
    assert select_sources(long, 3, 1, question, 30)[0].text == focused
    assert select_sources(long, 3, 1)[0].text == text


def test_citations_are_the_given_numbers_in_first_cited_order() -> None:
    assert cited_numbers("Yes [2]. Also [1, 3] and [2][4]; not [9] or [0].", given=4) == [2, 1, 3, 4]
    assert cited_numbers("no citations here", given=3) == []


def test_prompt_keeps_sources_in_order_and_cuts_the_one_that_does_not_fit() -> None:
    long_text = " ".join(f"w{i}" for i in range(400))
    request = GenerateRequest(
        question="what is w1?",
        instruction="answer from the sources",
        sources=[
            PromptSource(number=1, label="b/one", text="short source one"),
            PromptSource(number=2, label="b/two", text=long_text),
            PromptSource(number=3, label="b/three", text="never reached"),
        ],
    )
    prompt = build_prompt(request, max_tokens=50, context_tokens=400, count=words)
    assert prompt.sources_given == 2
    system, user_message = prompt.messages
    user = user_message.content
    assert system.role == "system" and system.content == "answer from the sources"
    assert "[1] b/one\nshort source one" in user and "[2] b/two\nw0 w1" in user and "three" not in user
    assert words(user) + words(system.content) <= 400 - 50
    assert user.endswith("Question: what is w1?\nAnswer:")
    with pytest.raises(ValueError, match="context"):
        build_prompt(request, max_tokens=390, context_tokens=400, count=words)


def test_trim_to_tokens_cuts_at_a_word_boundary() -> None:
    text = "alpha beta gamma delta epsilon"
    assert trim_to_tokens(text, 10, words) == text
    assert trim_to_tokens(text, 3, words) == "alpha beta …"


def test_breaker_opens_after_failures_probes_after_the_reset_and_closes_on_success() -> None:
    breaker = LlmBreaker(fail_max=2, reset_timeout_s=0.3)
    breaker.record(LlmUnavailableError("llm-timeout"))
    assert breaker.state == "closed" and breaker.admits()
    breaker.record(LlmUnavailableError("llm-timeout"))
    assert breaker.state == "open" and not breaker.admits()
    time.sleep(0.35)
    assert breaker.admits()  # the reset timeout passed: the next request probes
    breaker.record(LlmUnavailableError("llm-error"))  # the probe failed: open again
    assert breaker.state == "open" and not breaker.admits()
    time.sleep(0.35)
    breaker.record(None)
    assert breaker.state == "closed" and breaker.admits()
    assert "closed" in breaker.detail()


def test_nothing_relevant_when_the_best_hit_is_under_the_minimum_score() -> None:
    hits = [hit("b/a", 0.31, "a"), hit("b/b", 0.12, "b")]
    assert not nothing_relevant(hits, min_score=0.3)
    assert nothing_relevant(hits, min_score=0.32)
    assert nothing_relevant([], min_score=-1.0)


def test_source_snippets_are_redacted_like_the_answer() -> None:
    # the card number straddles the snippet's cut: redacted whole first, never cut into a number that fails Luhn
    text = "Write to jane.doe@example.org about it. " + "Filler words here. " * 13 + "Card 4111 1111 1111 1111 paid."
    assert text.index("4111") < SNIPPET_CHARS < text.index("paid")
    (source,) = select_sources([hit("b/mail.txt", 0.9, text)], max_sources=5, chunks_per_source=1)
    snippet = source.ask_source().snippet
    assert "[email redacted]" in snippet and "jane" not in snippet and "4111" not in snippet
    assert "Filler words" in snippet


def test_a_loop_is_a_phrase_repeated_eight_times_in_a_row_at_any_alignment() -> None:
    assert degenerate("x " + "Kafka " * 8) == "repeats 'Kafka' 8 times in a row"
    assert degenerate("a b " + "the cat sat " * 8) is not None  # a 3-word phrase, not aligned to the start
    assert degenerate("x " + "Kafka " * 7) is None
    prose = "A consumer group shares partitions [1]. Each partition has one reader, one at a time [1]."
    assert degenerate(prose * 3) is None  # a repeated sentence is longer than a 4-word phrase
