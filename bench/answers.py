"""Can Ask's answers be trusted: `uv run python -m bench.answers [--models smollm2-135m gemma3-270m] [--sweep]`.

Runs the query service's own Ask code (query_service.ask.Asker: source selection, the support check, the
extractive answer, "not found", the answer cache fed by index statuses as the status view feeds it) over the
project's question set (bench/answer_set.py), with MiniLM retrieval over the set's documents in process and the
packaged GGUF models generating as the LLM worker does (same prompt builder), or no model at all (the extractive
path alone). Prints per path: right-source citation rate, supported (generated) answers, wrong answers shown as
answers (target 0), not-found precision/recall over the absent-fact questions, and stale answers after a change
(target 0). ``--sweep`` prints not-found precision/recall of the extractive path for a range of
MMRAG_ASK_ANSWER_MIN values (how its default was chosen). Greedy decoding: a run repeats on the same box.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from bench.answer_set import ABSENT, ANSWERED, CHANGES, DOCS, Question
from consumers.llm_worker.generator import GenerationParams
from consumers.llm_worker.llama_cpp_generator import LlamaCppGenerator
from consumers.llm_worker.prompt import build_prompt
from mmrag.pb.events_pb2 import GenerateChunk, GenerateRequest, IndexState, IndexStatus, SearchHit
from mmrag.pb.query_pb2 import AskFinal
from mmrag.text_encoder import MiniLMEncoder
from query_service.answer_cache import AnswerCache, MemoryAnswerStore
from query_service.ask import Asker, AskLimits
from query_service.grounding import NOT_FOUND
from query_service.llm_breaker import LlmBreaker, LlmUnavailableError
from query_service.types import SearchOutcome, ShardHit

BUCKET = "bench"


class Encoder:
    def __init__(self, minilm: MiniLMEncoder) -> None:
        self.minilm = minilm

    def encode(self, text: str, image: bytes) -> np.ndarray:
        return np.asarray(self.minilm.encode([text])[0])

    def minilm_sentences(self, sentences: list[str]) -> np.ndarray:
        return np.asarray(self.minilm.encode(list(sentences)))


@dataclass
class Index:
    """The documents as one shard holds them: one chunk each, MiniLM vectors, a version per change."""

    minilm: MiniLMEncoder
    docs: dict[str, tuple[str, str, np.ndarray]] = field(default_factory=dict)  # key -> (version, text, vector)
    space_id, shards, space_name = "bench", 1, ""

    def put(self, key: str, text: str, version: str) -> IndexStatus:
        self.docs[key] = (version, text, np.asarray(self.minilm.encode([text])[0]))
        return IndexStatus(
            object_id=f"{BUCKET}/{key}", version=version, state=IndexState.INDEX_STATE_INDEXED, indexed_at_ms=now()
        )

    def search(self, vector: np.ndarray, top_k: int, timeout: float, text: str, scope: object = None) -> SearchOutcome:
        ranked = sorted(self.docs.items(), key=lambda kv: -float(kv[1][2] @ vector))[:top_k]
        hits = [
            ShardHit(
                SearchHit(
                    vector_id=f"{key}#0",
                    object_id=f"{BUCKET}/{key}",
                    version=version,
                    score=float(vec @ vector),
                    text=body,
                    has_text=True,
                ),
                0,
            )
            for key, (version, body, vec) in ranked
        ]
        return SearchOutcome(hits, [], [])


_clock = [int(time.time() * 1000)]


def now() -> int:
    _clock[0] += 1
    return _clock[0]


class LocalGeneration:
    """The LLM worker's path in process: the same prompt builder, one packaged GGUF; None: the LLM is away."""

    def __init__(self, generator: LlamaCppGenerator | None, max_tokens: int) -> None:
        self.generator = generator
        self.max_tokens = max_tokens

    def stream(self, request: GenerateRequest, deadline: float) -> Iterator[GenerateChunk]:
        if self.generator is None:
            raise LlmUnavailableError("no-llm-worker", "extractive path only")
        g = self.generator
        prompt = build_prompt(request, self.max_tokens, g.context_tokens, g.count_tokens)
        seq = 0
        for delta in g.stream(prompt.messages, GenerationParams(self.max_tokens), threading.Event()):
            if delta.text:
                yield GenerateChunk(seq=seq, text=delta.text)
                seq += 1
        yield GenerateChunk(seq=seq, final=True, finish_reason="stop", sources_given=prompt.sources_given)


@dataclass
class Tally:
    answered: int = 0
    right_source: int = 0
    supported: int = 0
    wrong_shown: int = 0
    absent: int = 0
    not_found_right: int = 0  # absent facts answered "not found"
    not_found_said: int = 0  # every "not found"
    changes: int = 0
    stale: int = 0
    seconds: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


def asker_for(index: Index, generation: LocalGeneration, answer_min: float, cache: AnswerCache) -> Asker:
    limits = AskLimits(30.0, 120.0, 3, 1, generation.max_tokens, float("-inf"), answer_min=answer_min)
    breaker = LlmBreaker(10**6, 1.0)  # never opens: every question tries the model
    encoder = Encoder(index.minilm)
    return Asker(limits, encoder, index, generation, breaker, None, None, cache)  # type: ignore[arg-type]


def ask(asker: Asker, question: str) -> AskFinal:
    final = AskFinal()
    for event in asker.ask(question, 5, 0, None):
        if event.WhichOneof("event") == "final":
            final = event.final
    return final


def shown(final: AskFinal) -> bool:
    return final.answer != NOT_FOUND


def score_answered(tally: Tally, q: Question, final: AskFinal) -> None:
    tally.answered += 1
    cited = {c.object_id for c in final.citations}
    tally.right_source += f"{BUCKET}/{q.doc}" in cited
    tally.supported += not final.is_degraded
    tally.not_found_said += not shown(final)
    if shown(final) and not all(w in final.answer.lower() for w in q.words):
        tally.wrong_shown += 1
        tally.wrong.append(f"{q.question} -> {final.answer[:120]!r}")


def run_path(minilm: MiniLMEncoder, generator: LlamaCppGenerator | None, answer_min: float) -> Tally:
    index = Index(minilm)
    cache = AnswerCache(MemoryAnswerStore(100), 0.97, 3600)
    for key, text in DOCS.items():
        cache.on_index_status(index.put(key, text, "v1"))
    asker = asker_for(index, LocalGeneration(generator, 96), answer_min, cache)
    tally = Tally()
    for q in ANSWERED:
        start = time.monotonic()
        score_answered(tally, q, ask(asker, q.question))
        tally.seconds.append(time.monotonic() - start)
    for q in ABSENT:
        final = ask(asker, q.question)
        tally.absent += 1
        tally.not_found_said += not shown(final)
        tally.not_found_right += not shown(final)
        if shown(final):
            tally.wrong.append(f"(absent) {q.question} -> {final.answer[:120]!r}")
    for change in CHANGES:
        ask(asker, change.question)  # answered (and maybe cached) from the first version
        cache.on_index_status(index.put(change.doc, change.new_text, "v2"))  # as the status view feeds it
        after = ask(asker, change.question)
        tally.changes += 1
        tally.stale += change.old_word in after.answer
    return tally


def report(name: str, t: Tally) -> None:
    precision = t.not_found_right / t.not_found_said if t.not_found_said else 1.0
    recall = t.not_found_right / t.absent if t.absent else 1.0
    median = sorted(t.seconds)[len(t.seconds) // 2] if t.seconds else 0.0
    print(
        f"{name:<16} right source {t.right_source}/{t.answered}  supported {t.supported}/{t.answered}  "
        f"wrong shown {t.wrong_shown}  not-found P {precision:.2f} R {recall:.2f}  stale {t.stale}/{t.changes}  "
        f"median Ask {median:.2f} s"
    )
    for line in t.wrong:
        print(f"{'':18}{line}")


def sweep(minilm: MiniLMEncoder) -> None:
    print("extractive path, MMRAG_ASK_ANSWER_MIN sweep:")
    for answer_min in (0.50, 0.55, 0.60, 0.65, 0.70, 0.75):
        t = run_path(minilm, None, answer_min)
        said = t.not_found_said
        p = t.not_found_right / said if said else 1.0
        print(
            f"  {answer_min:.2f}: not-found P {p:.2f} R {t.not_found_right / t.absent:.2f}  "
            f"answered shown {t.answered - (said - t.not_found_right)}/{t.answered}  wrong shown {t.wrong_shown}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--answer-min", type=float, default=0.65, help="MMRAG_ASK_ANSWER_MIN")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    minilm = MiniLMEncoder()
    minilm.warm_up()
    print(
        f"{len(DOCS)} documents, {len(ANSWERED)} answerable questions, {len(ABSENT)} absent facts, "
        f"{len(CHANGES)} changed facts"
    )
    if args.sweep:
        sweep(minilm)
    report("extractive only", run_path(minilm, None, args.answer_min))
    for model in args.models:
        generator = LlamaCppGenerator(model, args.threads, context_tokens=2048)
        generator.warm_up()
        report(model, run_path(minilm, generator, args.answer_min))


if __name__ == "__main__":
    main()
