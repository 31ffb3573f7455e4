"""Which packaged GGUF answers more faithfully from its sources: `uv run python -m bench.llm_faithfulness`.

Each question comes with two or three numbered sources, built into the prompt exactly as the LLM worker builds
it (same instruction, same trimming). Most facts are invented, so a model can only get them from the sources,
not from what it learned; the right source is not always [1]; two questions have no answer in their sources.
Scored per question: the answer holds the expected words and is backed by the right source and no other (its
citations, else the sources Ask attributes its sentences to); for the unanswerable ones, it says the sources do
not tell and no source backs it. Greedy decoding, so a run repeats; timings depend on how busy the machine is."""

from __future__ import annotations

import argparse
import functools
import re
import threading
import time
from dataclasses import dataclass

import numpy as np

from consumers.llm_worker.generator import GenerationParams
from consumers.llm_worker.llama_cpp_generator import LlamaCppGenerator
from consumers.llm_worker.models import MODELS
from consumers.llm_worker.prompt import build_prompt
from mmrag.pb.events_pb2 import GenerateRequest, PromptSource, SearchHit
from mmrag.text_encoder import MiniLMEncoder
from query_service.sources import INSTRUCTION, Source, cited_numbers
from query_service.support import SupportChecker

DISTRACTORS = {
    "bread": "Sourdough bread rises with a starter of wild yeast and lactic acid bacteria; the dough ferments slowly.",
    "tides": "Tide pools are rocky pools on the seashore that the sea fills at high tide; crabs live there.",
    "kafka": "Kafka consumer groups split a topic's partitions between their members; each partition has one reader.",
    "shapes": "A hexagon has six sides and six corners; bees build their honeycomb cells in this shape.",
}


@dataclass(frozen=True)
class Case:
    question: str
    sources: tuple[str, ...]  # in prompt order, numbered from 1
    answer_words: tuple[str, ...]  # every one must appear (lower-case); empty = unanswerable
    right: int  # the source that holds the answer; 0 = none does


CASES = (
    Case(
        "What colour is the lighthouse of Port Velmar painted?",
        ("The lighthouse of Port Velmar was repainted bright green in 1987 after a storm.", DISTRACTORS["tides"]),
        ("green",),
        1,
    ),
    Case(
        "How many members does the Orrin Valley choir have?",
        (DISTRACTORS["bread"], "The Orrin Valley choir has 42 members and rehearses every Thursday evening."),
        ("42",),
        2,
    ),
    Case(
        "Which metal is the Kestrel bridge made of?",
        (DISTRACTORS["kafka"], DISTRACTORS["shapes"], "The Kestrel bridge is built entirely of copper, not steel."),
        ("copper",),
        3,
    ),
    Case(
        "What does the starter of sourdough bread contain?",
        (DISTRACTORS["bread"], DISTRACTORS["tides"]),
        ("yeast",),
        1,
    ),
    Case(
        "How many readers does each partition have in a Kafka consumer group?",
        (DISTRACTORS["shapes"], DISTRACTORS["kafka"]),
        ("one",),
        2,
    ),
    Case(
        "In which year was the Tamsin observatory opened?",
        ("The Tamsin observatory opened to the public in 1931 on a hill above the town.", DISTRACTORS["bread"]),
        ("1931",),
        1,
    ),
    Case(
        "What animal is the mascot of the Belford rowing club?",
        (DISTRACTORS["tides"], "The Belford rowing club's mascot is a blue heron named Pip."),
        ("heron",),
        2,
    ),
    Case(
        "How long does the Quillon ferry take to cross the lake?",
        ("The Quillon ferry crosses the lake in 35 minutes and runs every hour.", DISTRACTORS["kafka"]),
        ("35",),
        1,
    ),
    Case(
        "Who founded the Marrow Street library?",
        (DISTRACTORS["shapes"], DISTRACTORS["bread"], "The Marrow Street library was founded by Edith Calloway."),
        ("calloway",),
        3,
    ),
    Case(
        "What is the capital of the planet Zentara?",
        (DISTRACTORS["tides"], DISTRACTORS["kafka"]),
        (),
        0,
    ),
    Case(
        "How tall is the Ashgrove clock tower?",
        (DISTRACTORS["bread"], DISTRACTORS["shapes"]),
        (),
        0,
    ),
)
_REFUSAL = re.compile(r"\b(not|no|don't|doesn't|cannot|can't|unable|unknown)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Scored:
    faithful: bool
    right_words: bool
    model_cites: bool
    right_source: bool
    stray_source: bool
    first_token_s: float
    tokens_per_s: float


def score(case: Case, answer: str) -> tuple[bool, bool, bool, bool, bool]:
    """(faithful, expected words / refusal, the model cited at all, the right source backs it, another does).
    Sources are what the answer cites, else the sources Ask's support check finds for its sentences."""
    cited = cited_numbers(answer, len(case.sources))
    given = [Source(n, SearchHit(text=text), text, "text") for n, text in enumerate(case.sources, 1)]
    backing = cited or _checker().check(case.question, answer, given).numbers
    if case.right == 0:
        refused = bool(_REFUSAL.search(answer)) and not backing
        return refused, refused, bool(cited), not backing, bool(backing)
    words = all(w in answer.lower() for w in case.answer_words)
    right, stray = case.right in backing, any(n != case.right for n in backing)
    return words and right and not stray, words, bool(cited), right, stray


@functools.cache
def _checker() -> SupportChecker:
    encoder = MiniLMEncoder()
    encoder.warm_up()
    return SupportChecker(lambda texts: np.asarray(encoder.encode(texts)), support_min=0.6, answer_min=0.65)


def run_case(generator: LlamaCppGenerator, case: Case, max_tokens: int) -> tuple[str, Scored]:
    request = GenerateRequest(
        question=case.question,
        instruction=INSTRUCTION,
        sources=[PromptSource(number=i, label=f"doc-{i}.md", text=t) for i, t in enumerate(case.sources, 1)],
    )
    prompt = build_prompt(request, max_tokens, generator.context_tokens, generator.count_tokens)
    start = time.monotonic()
    first, text, completion = 0.0, "", 0
    for delta in generator.stream(prompt.messages, GenerationParams(max_tokens), threading.Event()):
        if delta.text and not first:
            first = time.monotonic() - start
        text += delta.text
        completion = delta.completion_tokens or completion
    total = time.monotonic() - start
    rate = completion / (total - first) if total > first and completion > 1 else 0.0
    return text, Scored(*score(case, text), first, rate)


def bench_model(model: str, threads: int, max_tokens: int, show: bool) -> list[Scored]:
    generator = LlamaCppGenerator(model, threads, context_tokens=2048)
    generator.warm_up()
    results = []
    for case in CASES:
        answer, scored = run_case(generator, case, max_tokens)
        results.append(scored)
        if show:
            print(f"  [{model}] {'ok ' if scored.faithful else 'BAD'} {case.question} -> {answer.strip()!r}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--show", action="store_true", help="print every answer")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    answerable = sum(1 for c in CASES if c.right)
    print(f"{len(CASES)} questions ({answerable} answerable from one source, {len(CASES) - answerable} not at all)")
    header = ("model", "faithful", "words", "model cites", "right source", "other source", "1st tok s", "tok/s")
    widths = (9, 6, 12, 13, 13, 10, 6)
    print(f"{header[0]:<14} " + " ".join(f"{h:>{w}}" for h, w in zip(header[1:], widths, strict=True)))
    for model in args.models:
        r = bench_model(model, args.threads, args.max_tokens, args.show)
        n = len(r)
        print(
            f"{model:<14} {sum(s.faithful for s in r):>5}/{n:<3} {sum(s.right_words for s in r):>6} "
            f"{sum(s.model_cites for s in r):>12} {sum(s.right_source for s in r):>13} "
            f"{sum(s.stray_source for s in r):>13} {sorted(s.first_token_s for s in r)[n // 2]:>10.2f} "
            f"{sorted(s.tokens_per_s for s in r)[n // 2]:>6.1f}"
        )


if __name__ == "__main__":
    main()
