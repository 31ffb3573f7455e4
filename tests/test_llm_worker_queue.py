"""The LLM worker under more requests than it has slots (real broker, real llama.cpp model, one generation at a
time): requests wait in Kafka untaken (their offsets uncommitted) while a generation runs, are taken in the order
they arrived across the request topic's partitions, and one whose deadline passed while it waited is dropped
unworked: never generated, no reply."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import REGISTRY

from consumers.llm_worker.generator import ChatMessage, Delta, GenerationParams
from consumers.llm_worker.llama_cpp_generator import LlamaCppGenerator
from consumers.llm_worker.models import DEFAULT_MODEL
from consumers.llm_worker.settings import LlmWorkerSettings
from consumers.llm_worker.worker import LlmWorker
from mmrag.kafka_clients import encode_headers
from mmrag.messages import now_ms
from mmrag.pb.events_pb2 import GenerateChunk, GenerateRequest, PromptSource
from mmrag.request_reply import ReplyAddress
from mmrag.telemetry import Probes
from mmrag.topics import Topics, ensure_topics
from tests.kafka_tools import read_topic, wait_for

pytestmark = pytest.mark.kafka
SOURCE = PromptSource(number=1, label="notes.md", text="The harbour of Port Velmar has a green lighthouse.")


class OrderRecorder(LlamaCppGenerator):
    """The real model; remembers which question each generation answered, in the order they ran, and holds the
    generation of "first" until ``release`` is set (a long generation, as long as the test needs)."""

    def __init__(self) -> None:
        super().__init__(DEFAULT_MODEL, threads=1, context_tokens=1024)
        self.questions: list[str] = []
        self.release = threading.Event()

    def warm_up(self) -> None:
        super().warm_up()
        self.questions.clear()  # the warm-up's own tiny generation

    def stream(
        self, messages: list[ChatMessage], params: GenerationParams, cancel: threading.Event | None = None
    ) -> Iterator[Delta]:
        question = messages[-1].content.rsplit("Question: ", 1)[-1].split("\n")[0]
        self.questions.append(question)
        if question == "first":
            self.release.wait(60)
        yield from super().stream(messages, params, cancel)


def expired_total() -> float:
    return REGISTRY.get_sample_value("mmrag_llm_requests_expired_total") or 0.0


def send(producer: Producer, topics: Topics, question: str, deadline_in_s: float, partition: int) -> str:
    """A request for 8 tokens on ``partition``, expiring ``deadline_in_s`` from now."""
    cid = uuid.uuid4().hex
    address = ReplyAddress(cid, topics.llm_replies, 0, now_ms() + int(deadline_in_s * 1000))
    request = GenerateRequest(correlation_id=cid, question=question, sources=[SOURCE], max_tokens=8)
    value = request.SerializeToString()
    producer.produce(
        topics.llm_requests, value, cid, partition=partition, headers=dict(encode_headers(address.headers()))
    )
    assert producer.flush(10) == 0
    time.sleep(0.005)  # arrival order is timestamp order, in ms: requests of one ms across partitions have none
    return cid


def committed(bootstrap: str, group: str, topic: str) -> list[int]:
    """The group's committed offset of each partition (-1001: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return [tp.offset for tp in consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)]
    finally:
        consumer.close()


def finals(bootstrap: str, topics: Topics) -> dict[str, GenerateChunk]:
    chunks = [GenerateChunk.FromString(r.value or b"") for r in read_topic(bootstrap, topics.llm_replies, idle_s=1)]
    return {c.correlation_id: c for c in chunks if c.final}


def test_queued_requests_wait_in_kafka_go_in_arrival_order_and_expired_ones_are_never_generated(
    bootstrap: str, unique: str
) -> None:
    topics = Topics(f"q{unique}.")
    ensure_topics(bootstrap, topics)
    group = f"llm-{unique}"
    settings = LlmWorkerSettings(
        bootstrap_servers=bootstrap, topic_prefix=topics.prefix, group=group, llm_max_tokens=16
    )
    model, probes, stop = OrderRecorder(), Probes("llm_worker"), threading.Event()
    worker = LlmWorker(settings, model, probes)
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: probes.ready, 120, "the LLM worker to warm up")
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        expired_before = expired_total()
        first = send(producer, topics, "first", 120, 1)
        wait_for(lambda: model.questions == ["first"], 60, "the first generation to start")
        # Arrival order across the 3 partitions; a consumer alone would hand out partition 0's backlog first.
        queued = [("late-1", 0.5), ("second", 120), ("late-2", 0.5), ("third", 120), ("fourth", 120), ("fifth", 120)]
        ids = {q: send(producer, topics, q, deadline, n % 3) for n, (q, deadline) in enumerate(queued, start=2)}
        # The worker orders what it has fetched: wait until all six are (a partition's first fetch can lag).
        wait_for(lambda: REGISTRY.get_sample_value("mmrag_llm_waiting_requests") == 6, 30, "six requests fetched")
        waiting = committed(bootstrap, settings.group_id(group), topics.llm_requests)
        time.sleep(1)  # the late ones expire while they wait
        model.release.set()
        answered = wait_for(lambda: len(f := finals(bootstrap, topics)) >= 5 and f, 180, "five answers")
        time.sleep(1)  # anything generated late would show up now
    finally:
        stop.set()
        thread.join(60)
    assert waiting == [-1001, 1, -1001], "while the first generates, the others wait in Kafka, not taken"
    assert model.questions == ["first", "second", "third", "fourth", "fifth"], "arrival order, expired ones never"
    generated = {first} | {ids[q] for q in ("second", "third", "fourth", "fifth")}
    assert set(finals(bootstrap, topics)) == generated
    assert all(not c.error and c.completion_tokens > 0 for c in answered.values())
    assert expired_total() - expired_before == 2
    accounted = sum(committed(bootstrap, settings.group_id(group), topics.llm_requests))
    assert accounted == 7, "every request is accounted for"
