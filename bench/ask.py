"""Ask's latency in one run: the bare model in-process vs the same prompts through Ask (gRPC -> retrieval over
Kafka -> llm.requests.v1 -> the LLM worker -> llm.replies.v1 -> the client), and degraded answers with the breaker
open.

    uv run --frozen --no-sync python -m bench.ask [--questions 12] [--degraded 30] [--max-tokens 32]
        [--max-sources N] [--chunks-per-source N] [--source-words N]

Starts its own Kafka, local S3 and milvus-lite (local_stack) and the deployables as processes, uploads the 33
documents of `bench/data/mixed_corpus` and asks its questions, each once (no cache answers). The LLM worker is the
production one with a generator that logs each generation's own timing (`bench/ask_worker.py`); after each Ask
the bench replays that prompt on the same model in-process (same settings, one at a time, nothing else asking).
Request-reply overhead on the first token, per Ask: (the query service's first token - its retrieval end) - (the
worker's model: first token - called), i.e. everything between retrieval and the first token that is not the
model. Then the LLM worker is stopped: the first Asks degrade (no worker) and open the breaker; the rest are
degraded answers with the breaker open.

The first token is the prompt's cost (~200 prompt tokens a second on 2 threads here): the bench asks with the
query service's own defaults (sources focused on the question); --max-sources, --chunks-per-source and
--source-words set MMRAG_ASK_MAX_SOURCES / MMRAG_ASK_CHUNKS_PER_SOURCE / MMRAG_ASK_SOURCE_WORDS to try others."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from rich.console import Console
from rich.table import Table

from bench.ask_worker import TIMINGS_ENV, Timing, timed_stream
from consumers.llm_worker.generator import ChatMessage, GenerationParams
from consumers.llm_worker.llama_cpp_generator import LlamaCppGenerator
from consumers.llm_worker.models import DEFAULT_MODEL
from consumers.llm_worker.settings import LlmWorkerSettings
from local_stack.processes import free_port, wait_until
from local_stack.services import Service
from local_stack.stack import Deployment, start_infra, start_services, stop_infra, stop_services
from mmrag.clip import write_random_clip
from mmrag.object_store import S3ObjectStore
from mmrag.pb import query_pb2, query_pb2_grpc
from producers.upload import upload_files

DATA = Path(__file__).parent / "data" / "mixed_corpus"
QUERY_ENV = {  # a loaded 2-core box: a slow first token must not degrade the measured Asks; the breaker stays open
    "MMRAG_ASK_TIMEOUT_S": "180",
    "MMRAG_LLM_FIRST_TOKEN_TIMEOUT_S": "150",
    "MMRAG_LLM_STALL_TIMEOUT_S": "60",
    "MMRAG_LLM_BREAKER_RESET_S": "600",
    "MMRAG_ANSWER_CACHE_SIZE": "0",  # every Ask measures the LLM path (the questions differ anyway)
}


@dataclass
class AskRun:
    """One Ask as the client saw it (seconds from the call) and its final message."""

    first_text_s: float
    last_text_s: float
    wall_s: float
    final: query_pb2.AskFinal


def ask_once(stub: query_pb2_grpc.QueryServiceStub, question: str) -> AskRun:
    start, first, last = time.monotonic(), 0.0, 0.0
    final = query_pb2.AskFinal()
    for event in stub.Ask(query_pb2.AskRequest(question=question, top_k=5), timeout=200):
        kind = event.WhichOneof("event")
        if kind == "delta":
            last = time.monotonic() - start
            first = first or last
        elif kind == "final":
            final = event.final
    return AskRun(first, last, time.monotonic() - start, final)


def new_timings(path: Path, seen: int) -> list[Timing]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [Timing(**json.loads(line)) for line in lines[seen:]]


def bare_run(gen: LlamaCppGenerator, timing: Timing, max_tokens: int) -> Timing:
    """The worker's prompt again, on the model in this process."""
    messages = [ChatMessage(**m) for m in timing.messages]
    bare = Timing(0.0)
    for _ in timed_stream(gen, messages, GenerationParams(max_tokens), bare):
        pass
    return bare


def start_stack(work: Path, bootstrap_dir: Path, args: argparse.Namespace) -> tuple[Deployment, Service, Service, Path]:
    """Infra, the indexing and retrieval path, the query service and the timed LLM worker; the corpus uploaded."""
    endpoints = start_infra(bootstrap_dir)
    unique = uuid.uuid4().hex[:8]
    clip = write_random_clip(work / "clip", seed=0)
    dep = Deployment(
        work / "state",
        endpoints,
        clip,
        topic_prefix=f"ask{unique}.",
        bucket=f"bench-{unique}",
        queue=f"queue-{unique}",
        grpc_port=free_port(),
    )
    dep.prepare()
    timings = work / "generations.jsonl"
    worker_env = {**dep.env(), "MMRAG_INSTANCE_ID": "llm_worker-0", "MMRAG_LLM_MAX_TOKENS": str(args.max_tokens)}
    worker_env[TIMINGS_ENV] = str(timings)
    worker = Service("llm_worker", "bench.ask_worker", worker_env, dep.state_dir / "logs")
    chosen = {"MAX_SOURCES": args.max_sources, "CHUNKS_PER_SOURCE": args.chunks, "SOURCE_WORDS": args.source_words}
    sources = {f"MMRAG_ASK_{name}": str(value) for name, value in chosen.items() if value is not None}
    query = dep.service("query_service", **QUERY_ENV, **sources)
    indexing = [dep.service(n) for n in ("sqs_bridge", "normalizer", "text_embedder", "index_updater")]
    start_services([*indexing, *dep.shard_workers(), query, worker], timeout_s=300)
    docs = sorted((DATA / "docs").glob("*.md"))
    upload_files(S3ObjectStore(dep.s3_settings(), "bench"), dep.bucket, docs)
    with grpc.insecure_channel(f"127.0.0.1:{dep.grpc_port}") as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        wait_until(lambda: searchable(stub) == len(docs), 300, f"the {len(docs)} documents to be searchable")
    return dep, query, worker, timings


def searchable(stub: query_pb2_grpc.QueryServiceStub) -> int:
    reply = stub.Search(query_pb2.SearchQuery(text="how does it work", top_k=100), timeout=10)
    return len({r.object_id for r in reply.results})


@dataclass
class Generated:
    ask: AskRun
    worker: Timing
    bare: Timing

    @property
    def overhead_s(self) -> float:
        t = self.ask.final.timings
        return (t.first_token_ms - t.retrieve_ms) / 1000 - self.worker.first_token_s

    @property
    def ask_tokens_per_s(self) -> float:
        span = self.ask.last_text_s - self.ask.first_text_s
        return (self.ask.final.completion_tokens - 1) / span if span > 0 else 0.0


def generation_phase(
    stub: query_pb2_grpc.QueryServiceStub, timings: Path, questions: Sequence[str], max_tokens: int
) -> list[Generated]:
    worker = LlmWorkerSettings()  # the worker's own defaults: the same threads for decoding and for prompts
    bare_gen = LlamaCppGenerator(DEFAULT_MODEL, worker.llm_threads, 2048, threads_batch=worker.llm_threads_batch)
    bare_gen.warm_up()
    seen = len(new_timings(timings, 0))
    runs = []
    for question in questions:
        run = ask_once(stub, question)
        generated = new_timings(timings, seen)
        seen += len(generated)
        if len(generated) != 1:  # not found (no generation), or the LLM path failed
            print(f"skipped {question!r}: {len(generated)} generations, {run.final.degraded_reason or 'not found'}")
            continue
        runs.append(Generated(run, generated[0], bare_run(bare_gen, generated[0], max_tokens)))
        r = runs[-1]
        print(
            f"{len(runs)}: Ask first token {r.ask.final.timings.first_token_ms:.0f} ms (model in the worker "
            f"{r.worker.first_token_s * 1000:.0f} ms, bare {r.bare.first_token_s * 1000:.0f} ms), overhead "
            f"{r.overhead_s * 1000:.1f} ms, {r.worker.prompt_tokens} prompt tokens",
            flush=True,
        )
    return runs


def degraded_phase(
    stub: query_pb2_grpc.QueryServiceStub, query: Service, worker: Service, questions: Sequence[str]
) -> list[AskRun]:
    worker.stop()

    def no_worker() -> bool:
        with urllib.request.urlopen(query.probe_url + "/readyz", timeout=5) as reply:
            return "llm workers: 0" in str(reply.read().decode())

    wait_until(no_worker, 60, "the query service to see no LLM worker")
    return [ask_once(stub, q) for q in questions]


def report(runs: list[Generated], degraded: list[AskRun], load: tuple[float, float], console: Console) -> None:
    table = Table(title=f"Ask on {os.cpu_count()} cores, load average {load[0]:.1f} -> {load[1]:.1f} (shared box)")
    for column in ("measure", "n", "p50", "p90", "unit"):
        table.add_column(column, justify="right" if column != "measure" else "left")

    def row(name: str, values: Sequence[float], unit: str = "ms", scale: float = 1000) -> None:
        v, digits = np.asarray(values) * scale, 1 if unit == "tok/s" else 0
        p50, p90 = (f"{np.percentile(v, q):.{digits}f}" if len(v) else "-" for q in (50, 90))
        table.add_row(name, str(len(v)), p50, p90, unit)

    row("bare model in-process: first token", [r.bare.first_token_s for r in runs])
    row("bare model in-process: decoding", [r.bare.tokens_per_s for r in runs], "tok/s", 1)
    row("model inside the LLM worker: first token", [r.worker.first_token_s for r in runs])
    row("model inside the LLM worker: decoding", [r.worker.tokens_per_s for r in runs], "tok/s", 1)
    row("Ask: retrieval (encode + search over Kafka)", [r.ask.final.timings.retrieve_ms / 1000 for r in runs])
    row("Ask: first token at the query service", [r.ask.final.timings.first_token_ms / 1000 for r in runs])
    row("Ask: first text at the gRPC client", [r.ask.first_text_s for r in runs])
    row("Ask: decoding seen by the client", [r.ask_tokens_per_s for r in runs], "tok/s", 1)
    row("request-reply overhead on the first token", [r.overhead_s for r in runs])
    row("prompt tokens", [r.worker.prompt_tokens for r in runs], "tokens", 1)
    by_reason: dict[str, list[AskRun]] = {}
    for d in degraded:
        by_reason.setdefault(d.final.degraded_reason or "not degraded", []).append(d)
    for reason, asks in sorted(by_reason.items()):
        row(f"degraded ({reason}): answer at the query service", [a.final.timings.total_ms / 1000 for a in asks])
        row(f"degraded ({reason}): answer at the gRPC client", [a.wall_s for a in asks])
    console.print(table)
    flagged = sum(r.ask.final.degraded_reason == "ungrounded" for r in runs)
    console.print(f"{flagged} of {len(runs)} generated answers were ungrounded (extractive answer followed)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=12, help="Asks generated (after 2 warm-up Asks)")
    parser.add_argument("--degraded", type=int, default=30, help="Asks after the LLM worker stopped")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-sources", type=int, help="numbered sources in the prompt (default: the service's)")
    parser.add_argument("--chunks-per-source", dest="chunks", type=int, help="(default: the service's)")
    parser.add_argument("--source-words", type=int, help="focus budget of a source (default: the service's)")
    args = parser.parse_args(argv)
    spec = json.loads((DATA / "questions.json").read_text())["questions"]
    questions = [q["query"] for q in spec if q["kind"] in ("text", "keyword")]
    if len(questions) < 2 + args.questions + args.degraded:
        parser.error(f"the corpus has {len(questions)} questions: ask fewer")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            dep, query, worker, timings = start_stack(work, work / "infra", args)
            with grpc.insecure_channel(f"127.0.0.1:{dep.grpc_port}") as channel:
                stub = query_pb2_grpc.QueryServiceStub(channel)
                for question in questions[:2]:
                    ask_once(stub, question)  # warm-up: first group joins, first prompt through the model
                runs = generation_phase(stub, timings, questions[2 : 2 + args.questions], args.max_tokens)
                rest = questions[2 + args.questions : 2 + args.questions + args.degraded]
                degraded = degraded_phase(stub, query, worker, rest)
        finally:
            stop_services(work / "state")
            stop_infra(work / "infra")
    report(runs, degraded, (load_before, os.getloadavg()[0]), Console())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
