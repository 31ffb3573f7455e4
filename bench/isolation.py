"""Latency isolation (issue 19): small text objects' upload -> indexed time, alone and with heavy objects in flight.

    uv run --frozen python -m bench.isolation [--small 40] [--rate 2] [--layout lanes|one-group] [--ocr-pages 300]

Starts its own Kafka, local S3 and milvus-lite (local_stack) and the indexing path as processes: SQS bridge,
normalizer, the text embedder (``lanes``: its light and heavy lane, as the stack runs it; ``one-group``: one
MMRAG_LANE=all group, the layout before cost lanes) and the index updater. Then, in one run, on one stack:

1. alone: ``--small`` one-line text objects put at ``--rate`` per second;
2. with heavy: a 300-page scanned PDF (really OCR'd: MMRAG_MAX_OCR_PAGES is set to ``--ocr-pages``), a 1 MB text
   (~900 chunks) and a DOCX at the chunk cap (~2000 chunks) are put, then the same number of small objects at the
   same rate.

A small object's time is from just before its put to its first ``indexed`` on index-status.v1 (what
GetObjectStatus reports), both on this process's clock. Prints p50/p99/max of each phase, the ratio of the p99s
(goal: with heavy <= 1.5x alone, and < 3 s) and what became of each heavy object (indexed, or its dead letter).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from consumers.text_embedder.chunking import chunk_text
from local_stack.processes import free_port
from local_stack.services import Service
from local_stack.stack import Deployment, start_infra, start_services, stop_infra, stop_services
from mmrag.clip import write_random_clip
from mmrag.ids import object_id
from mmrag.kafka_clients import decode_headers
from mmrag.object_store import S3ObjectStore
from mmrag.pb.events_pb2 import IndexState, IndexStatus
from mmrag.text_encoder import MiniLMEncoder
from mmrag.topics import Topics
from tests.documents import docx_bytes, scanned_pdf

SENTENCE = "Harbour {n}: the tide tables list high water, low water and the height of each tide at the pier. "
MAX_CHUNKS = 2000  # the text embedder's default MMRAG_MAX_CHUNKS


@dataclass
class Outcomes:
    """What index-status.v1 and dlq.v1 said of each object, first time seen, on this process's clock."""

    indexed: dict[str, float] = field(default_factory=dict)
    chunks: dict[str, int] = field(default_factory=dict)
    dead: dict[str, tuple[float, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Follower(threading.Thread):
    """Reads index-status.v1 and dlq.v1 from their current ends (assigned before any upload) into ``Outcomes``."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        super().__init__(daemon=True)
        self.outcomes = Outcomes()
        self.stop = threading.Event()
        self.status_topic, self.dlq_topic = topics.index_status, topics.dlq
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
        assigned = []
        for topic in (self.status_topic, self.dlq_topic):
            partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
            for p in partitions:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                assigned.append(TopicPartition(topic, p, high))
        self.consumer.assign(assigned)

    def run(self) -> None:
        while not self.stop.is_set():
            msg = self.consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            seen, key = time.time(), (msg.key() or b"").decode()
            with self.outcomes.lock:
                if msg.topic() == self.dlq_topic:
                    headers = decode_headers(msg.headers())  # type: ignore[arg-type]
                    self.outcomes.dead.setdefault(key, (seen, headers.get("dlq-error-message", "")))
                    continue
                status = IndexStatus.FromString(msg.value() or b"")
                if status.state == IndexState.INDEX_STATE_INDEXED and key not in self.outcomes.indexed:
                    self.outcomes.indexed[key] = seen
                    self.outcomes.chunks[key] = status.text_chunks


def heavy_objects(ocr_pages: int) -> dict[str, tuple[bytes, str]]:
    """The heavy neighbours: key -> (bytes, content type)."""
    text = "".join(SENTENCE.format(n=n) for n in range(11_000)).encode()[: 1 << 20]  # 1 MiB, ~900 chunks
    return {
        "heavy/scanned-book.pdf": (scanned_pdf(ocr_pages, "TIDE TABLE LEDGER"), "application/pdf"),
        "heavy/tide-tables.txt": (text, "text/plain"),
        "heavy/chunk-cap.docx": (docx_at_chunk_cap(), "application/octet-stream"),
    }


def docx_at_chunk_cap(margin: int = 10) -> bytes:
    """A DOCX whose text makes just under MMRAG_MAX_CHUNKS chunks (counted with the embedder's own chunker)."""
    tokenizer = MiniLMEncoder().load_tokenizer()
    paragraphs = [" ".join(SENTENCE.format(n=n * 10 + k) for k in range(10)) for n in range(4000)]
    low, high = 1, len(paragraphs)
    while low < high:  # the most paragraphs whose text stays under the cap
        mid = (low + high + 1) // 2
        chunks = len(chunk_text("\n".join(paragraphs[:mid]), tokenizer, 256, 32))
        low, high = (mid, high) if chunks <= MAX_CHUNKS - margin else (low, mid - 1)
    return docx_bytes(paragraphs[:low], ["tide", "table"])


def small_times(
    store: S3ObjectStore, dep: Deployment, outcomes: Outcomes, tag: str, n: int, rate: float, wait_s: float
) -> list[float]:
    """Puts ``n`` one-line texts at ``rate``/s; the seconds from each put to its ``indexed`` (within ``wait_s``
    after the last put), sorted."""
    put: dict[str, float] = {}
    began = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, began + i / rate - time.monotonic()))
        key = f"small/{tag}-{i}.txt"
        put[object_id(dep.bucket, key)] = time.time()
        store.put(dep.bucket, key, f"Note {tag} {i}: pick up the sourdough starter on Friday.".encode(), "text/plain")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with outcomes.lock:
            done = {oid: outcomes.indexed[oid] - at for oid, at in put.items() if oid in outcomes.indexed}
        if len(done) == n:
            return sorted(done.values())
        time.sleep(0.2)
    raise RuntimeError(f"{n - len(done)} of {n} small objects ({tag}) never indexed: see the services' logs")


def services(dep: Deployment, layout: str, ocr_pages: int) -> list[Service]:
    # the book is really OCR'd (its pages are within the limit) and may take its time: heavy work in flight
    work = {"MMRAG_MAX_OCR_PAGES": str(ocr_pages), "MMRAG_EXTRACT_BUDGET_S": "900"}
    text = dep.text_lanes(**work) if layout == "lanes" else [dep.service("text_embedder", MMRAG_LANE="all", **work)]
    return [dep.service(n) for n in ("sqs_bridge", "normalizer", "index_updater")] + text


def run(args: argparse.Namespace, work: Path) -> None:
    endpoints = start_infra(work / "infra")
    tag = f"iso{uuid.uuid4().hex[:6]}"
    clip = write_random_clip(work / "clip", seed=0)
    dep = Deployment(
        work / "stack",
        endpoints,
        clip,
        topic_prefix=f"{tag}.",
        bucket=f"bench-{tag}",
        queue=f"q-{tag}",
        grpc_port=free_port(),
    )
    try:
        dep.prepare()
        heavy = heavy_objects(args.ocr_pages)  # built before the clock starts (the DOCX is sized by tokenizing)
        start_services(services(dep, args.layout, args.ocr_pages), 300)
        follower = Follower(endpoints.bootstrap_servers, Topics(dep.topic_prefix))
        follower.start()
        store = S3ObjectStore(dep.s3_settings(), "bench")
        small_times(store, dep, follower.outcomes, "warm-up", 3, args.rate, 300)  # rebalances, cold caches
        alone = small_times(store, dep, follower.outcomes, "alone", args.small, args.rate, 300)
        heavy_put = {}
        for key, (data, content_type) in heavy.items():
            heavy_put[object_id(dep.bucket, key)] = (key, len(data), time.time())
            store.put(dep.bucket, key, data, content_type)
        # in one group the small ones wait for the heavy work of their batches: as long as the heavy ones may take
        beside = small_times(store, dep, follower.outcomes, "beside-heavy", args.small, args.rate, args.heavy_wait_s)
        small_done = time.time()
        wait_heavy(follower.outcomes, heavy_put, args.heavy_wait_s)
        follower.stop.set()
        report(args, alone, beside, follower.outcomes, heavy_put, small_done)
    finally:
        stop_services(dep.state_dir)
        stop_infra(work / "infra")


def wait_heavy(outcomes: Outcomes, heavy: dict[str, tuple[str, int, float]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with outcomes.lock:
            if all(oid in outcomes.indexed or oid in outcomes.dead for oid in heavy):
                return
        time.sleep(0.5)


def report(
    args: argparse.Namespace,
    alone: list[float],
    beside: list[float],
    outcomes: Outcomes,
    heavy: dict[str, tuple[str, int, float]],
    small_done: float,
) -> None:
    console = Console()
    table = Table(title=f"small objects, upload -> indexed ({args.layout}, {args.small} at {args.rate:g}/s)")
    for column in ("phase", "objects", "p50 s", "p99 s", "max s"):
        table.add_column(column, justify="right")
    p99 = {}
    for phase, times in (("alone", alone), ("with heavy in flight", beside)):
        t = np.array(times)
        p99[phase] = float(np.percentile(t, 99))
        table.add_row(phase, str(len(t)), f"{np.median(t):.2f}", f"{p99[phase]:.2f}", f"{t.max():.2f}")
    console.print(table)
    ratio = p99["with heavy in flight"] / p99["alone"]
    met = ratio <= 1.5 and p99["with heavy in flight"] < 3
    console.print(f"p99 with heavy / alone: {ratio:.2f}x (goal <= 1.5x and < 3 s: {'met' if met else 'NOT met'})")
    done = Table(title="heavy objects")
    for column in ("object", "bytes", "outcome", "s after put", "after the last small one"):
        done.add_column(column, justify="right")
    for oid, (key, size, at) in heavy.items():
        if oid in outcomes.indexed:
            end, outcome = outcomes.indexed[oid], f"indexed, {outcomes.chunks[oid]} chunks"
        elif oid in outcomes.dead:
            end, outcome = outcomes.dead[oid][0], f"DLQ: {outcomes.dead[oid][1][:90]}"
        else:
            end, outcome = time.time(), f"still in flight after {args.heavy_wait_s:.0f} s"
        after = "yes" if end > small_done else "no"
        done.add_row(key, str(size), outcome, f"{end - at:.1f}", after)
    console.print(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=40, help="small objects per phase")
    parser.add_argument("--rate", type=float, default=2.0, help="small objects put per second")
    parser.add_argument("--layout", choices=("lanes", "one-group"), default="lanes")
    parser.add_argument("--ocr-pages", type=int, default=300, help="pages of the scanned PDF (all OCR'd)")
    parser.add_argument("--heavy-wait-s", type=float, default=600, help="how long to wait for the heavy objects")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
