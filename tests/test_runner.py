"""The shared run loop against the real broker: transactions, DLQ, retries, isolation, trace propagation."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from mmrag.errors import PermanentError, RetryableError
from mmrag.messages import Envelope, Output
from mmrag.pb.events_pb2 import GenerateChunk
from mmrag.runner import ItemResult, StageRunner
from mmrag.settings import BaseServiceSettings
from tests.kafka_tools import create_topics, read_topic

pytestmark = pytest.mark.kafka

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def text_decoder(raw: bytes | None, headers: Mapping[str, str]) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PermanentError("echo", "message", "not UTF-8", "send text") from exc


class Echo:
    """Upper-cases each value onto the output topic; scripted failures for the tests."""

    stage = "echo"

    def __init__(self, out_topic: str, transient_failures: int = 0, batch_bug: bool = False) -> None:
        self.out_topic = out_topic
        self.transient_failures = transient_failures
        self.batch_bug = batch_bug
        self.calls = 0

    def warm_up(self) -> None:
        pass

    def handle(self, batch: Sequence[Envelope[str]]) -> list[ItemResult]:
        self.calls += 1
        if self.transient_failures > 0:
            self.transient_failures -= 1
            raise RetryableError("echo", "batch", "store timeout", "retry")
        if self.batch_bug and len(batch) > 1 and any(e.value == "bug" for e in batch):
            raise ValueError("one item breaks the whole batch")
        results: list[ItemResult] = []
        for env in batch:
            if env.value in ("poison", "bug"):
                results.append(PermanentError("echo", str(env.key), f"cannot echo {env.value!r}", "drop it"))
            else:
                value = GenerateChunk(text=(env.value or "").upper(), seq=env.offset)
                results.append([Output(self.out_topic, env.key, value)])
        return results


@pytest.fixture
def topics(bootstrap: str, unique: str) -> tuple[str, str, str]:
    names = (f"t{unique}.in", f"t{unique}.out", f"t{unique}.dlq.v1")
    create_topics(bootstrap, list(names), 2)
    return names


def produce(bootstrap: str, topic: str, values: list[bytes], same_key: bool = False) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i, value in enumerate(values):
        producer.produce(
            topic,
            key=b"k" if same_key else f"k{i}".encode(),
            value=value,
            headers=[("traceparent", TRACEPARENT.encode())],
        )
    assert producer.flush(10) == 0


def run_until_drained(runner: StageRunner[str], expected: int) -> None:
    runner.start()
    seen = 0
    for _ in range(200):
        seen += runner.step()
        if seen >= expected:
            break
    runner.close()
    assert seen == expected


def make_runner(
    bootstrap: str,
    unique: str,
    handler: Echo,
    in_topic: str,
    transactional: bool,
    eager: bool = False,
    **settings: object,
) -> StageRunner[str]:
    config = BaseServiceSettings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"t{unique}.",
        instance_id="test",
        retry_initial_s=0.01,
        retry_max_s=0.05,
        **settings,
    )  # type: ignore[arg-type]
    return StageRunner(
        config,
        handler,
        group=f"g{unique}",
        decoders={in_topic: text_decoder},
        transactional=transactional,
        eager=eager,
    )


def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    offsets = consumer.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=10)
    consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


@pytest.mark.parametrize("transactional", [True, False], ids=["transactional", "sink"])
def test_outputs_dlq_and_commits(
    bootstrap: str, unique: str, topics: tuple[str, str, str], transactional: bool
) -> None:
    in_topic, out_topic, dlq_topic = topics
    values = [b"alpha", b"poison", b"\xff\xfe not utf-8", b"beta", b"gamma"]
    produce(bootstrap, in_topic, values)
    run_until_drained(make_runner(bootstrap, unique, Echo(out_topic), in_topic, transactional), len(values))

    out = read_topic(bootstrap, out_topic, idle_s=1)
    texts = set()
    for m in out:
        chunk = GenerateChunk()
        chunk.ParseFromString(m.value or b"")
        texts.add(chunk.text)
        assert m.headers["schema"] == "mmrag.v1.GenerateChunk"
        assert m.headers["traceparent"].split("-")[1] == TRACE_ID  # same trace, new span
        assert m.headers["traceparent"] != TRACEPARENT
    assert texts == {"ALPHA", "BETA", "GAMMA"} and len(out) == 3

    dlq = {m.value: m.headers for m in read_topic(bootstrap, dlq_topic, idle_s=1)}
    assert set(dlq) == {b"poison", b"\xff\xfe not utf-8"}
    assert dlq[b"poison"]["dlq-stage"] == "echo"
    assert dlq[b"poison"]["dlq-error-class"] == "PermanentError"
    assert "cannot echo 'poison'" in dlq[b"poison"]["dlq-error-message"]
    assert dlq[b"poison"]["dlq-source-topic"] == in_topic and dlq[b"poison"]["dlq-source-offset"].isdigit()
    assert dlq[b"poison"]["traceparent"] == TRACEPARENT  # original headers are kept
    assert committed(bootstrap, f"g{unique}", in_topic) == len(values)


def test_retryable_errors_are_retried_then_succeed(bootstrap: str, unique: str, topics: tuple[str, str, str]) -> None:
    in_topic, out_topic, dlq_topic = topics
    produce(bootstrap, in_topic, [b"one"])
    handler = Echo(out_topic, transient_failures=2)
    run_until_drained(make_runner(bootstrap, unique, handler, in_topic, True), 1)
    assert handler.calls == 3
    assert len(read_topic(bootstrap, out_topic, idle_s=1)) == 1
    assert read_topic(bootstrap, dlq_topic, idle_s=0.5) == []


def test_an_outage_backs_off_and_never_dead_letters(bootstrap: str, unique: str, topics: tuple[str, str, str]) -> None:
    """Retries used up -> the batch is rewound, readiness turns red with the reason, and it comes again after a
    back-off, as often as it takes; the DLQ stays empty and the output is produced once the dependency is back."""
    in_topic, out_topic, dlq_topic = topics
    produce(bootstrap, in_topic, [b"one"])
    handler = Echo(out_topic, transient_failures=7)
    runner = make_runner(bootstrap, unique, handler, in_topic, True, retry_attempts=3, backoff_max_s=0.2)
    runner.start()
    readiness: list[tuple[bool, str]] = []
    committed_total = 0
    for _ in range(100):
        committed_total += runner.step()
        readiness.append((runner.probes.ready, runner.probes.reason))
        if committed_total:
            break
    runner.close()
    assert committed_total == 1 and handler.calls == 8, "3 + 3 failed calls in two back-offs, then 1 failed, 1 ok"
    red = [reason for ready, reason in readiness if not ready]
    assert len(set(red)) == 2 and all("store timeout" in reason for reason in red), "red from the 1st back-off on"
    assert readiness[-1][0] is True, "ready again once the dependency answers"
    assert read_topic(bootstrap, dlq_topic, idle_s=0.5) == []
    assert len(read_topic(bootstrap, out_topic, idle_s=1)) == 1
    assert committed(bootstrap, f"g{unique}", in_topic) == 1


def test_an_eager_runner_handles_a_lone_request_without_waiting_to_fill_a_batch(
    bootstrap: str, unique: str, topics: tuple[str, str, str]
) -> None:
    """Request-reply stages poll eagerly: the first message ends the poll (plus what is already fetched), where a
    batching stage waits up to max_wait_ms for max_batch messages."""
    in_topic, out_topic, _ = topics
    runner = make_runner(bootstrap, unique, Echo(out_topic), in_topic, False, eager=True, max_wait_ms=8000)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while not runner.keeper.assigned and time.monotonic() < deadline:  # joined, the topic still empty
            runner.step()
        produce(bootstrap, in_topic, [b"lone"])
        began = time.monotonic()
        handled = runner.step()
        took = time.monotonic() - began
    finally:
        runner.close()
    assert handled == 1
    assert took < 4, f"a lone request waited {took:.1f} s of the 8 s batch window"


class ColdStart(Echo):
    """Echo whose dependency is away at warm-up the first ``failures`` times (Milvus starting, a collection being
    created by another process)."""

    def __init__(self, out_topic: str, failures: int) -> None:
        super().__init__(out_topic)
        self.failures = failures
        self.warm_ups = 0

    def warm_up(self) -> None:
        self.warm_ups += 1
        if self.warm_ups <= self.failures:
            raise RetryableError("echo", "store", "collection being created", "wait for it")


def test_a_dependency_away_at_warm_up_is_waited_for(bootstrap: str, unique: str, topics: tuple[str, str, str]) -> None:
    """A RetryableError at warm-up is an outage like any other: readiness red with the reason, back-off, try again;
    the process neither exits nor dead-letters, and consumes once warm."""
    in_topic, out_topic, dlq_topic = topics
    produce(bootstrap, in_topic, [b"one"])
    handler = ColdStart(out_topic, failures=2)
    runner = make_runner(bootstrap, unique, handler, in_topic, True, backoff_max_s=0.2)
    reasons: list[str] = []
    set_ready = runner.probes.set_ready

    def record(ready: bool, reason: str = "") -> None:
        if not ready:
            reasons.append(reason)
        set_ready(ready, reason)

    runner.probes.set_ready = record  # type: ignore[method-assign]
    runner.start()
    assert handler.warm_ups == 3 and runner.probes.ready
    assert len(reasons) == 2 and all("collection being created" in r for r in reasons)
    seen = 0
    for _ in range(100):
        seen += runner.step()
        if seen:
            break
    runner.close()
    assert seen == 1 and len(read_topic(bootstrap, out_topic, idle_s=1)) == 1
    assert read_topic(bootstrap, dlq_topic, idle_s=0.5) == []


class Big(Echo):
    """Echo whose output for "big" is larger than any limit the tests set (random text: lz4 can't shrink it)."""

    def handle(self, batch: Sequence[Envelope[str]]) -> list[ItemResult]:
        return [
            [
                Output(
                    self.out_topic,
                    env.key,
                    GenerateChunk(text=secrets.token_urlsafe(50_000) if env.value == "big" else env.value),
                )
            ]
            for env in batch
        ]


@pytest.mark.parametrize("who_refuses", ["producer", "topic"])
def test_an_output_kafka_refuses_dead_letters_its_item_only(
    bootstrap: str, unique: str, topics: tuple[str, str, str], who_refuses: str
) -> None:
    """MSG_SIZE_TOO_LARGE is the item's problem, not an abortable transaction to retry forever: the item goes to the
    DLQ with the reason and the rest of its batch is delivered, whether our limit or the topic's refuses it."""
    in_topic, out_topic, dlq_topic = topics
    if who_refuses == "topic":
        admin = AdminClient({"bootstrap.servers": bootstrap})
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

        resource = ConfigResource(
            "TOPIC",
            out_topic,
            incremental_configs=[
                ConfigEntry("max.message.bytes", "10000", incremental_operation=AlterConfigOpType.SET)
            ],
        )
        for future in admin.incremental_alter_configs([resource]).values():
            future.result()
    produce(bootstrap, in_topic, [b"a", b"big", b"c"], same_key=True)
    limit = 20_000 if who_refuses == "producer" else 1_000_000
    runner = make_runner(bootstrap, unique, Big(out_topic), in_topic, True, max_wait_ms=1500, max_message_bytes=limit)
    run_until_drained(runner, 3)
    out = []
    for m in read_topic(bootstrap, out_topic, idle_s=1):
        chunk = GenerateChunk()
        chunk.ParseFromString(m.value or b"")
        out.append(chunk.text)
    assert sorted(out) == ["a", "c"]
    dlq = read_topic(bootstrap, dlq_topic, idle_s=1)
    assert [m.value for m in dlq] == [b"big"]
    assert "Kafka refuses its output" in dlq[0].headers["dlq-error-message"]
    assert committed(bootstrap, f"g{unique}", in_topic) == 3


class Slow(Echo):
    def handle(self, batch: Sequence[Envelope[str]]) -> list[ItemResult]:
        import time

        time.sleep(9)
        return super().handle(batch)


def test_a_batch_longer_than_max_poll_interval_keeps_its_partitions(
    bootstrap: str, unique: str, topics: tuple[str, str, str]
) -> None:
    """The handler runs beside a loop that keeps polling (assignment paused), so a batch that takes longer than
    max.poll.interval.ms still commits: the member never leaves the group."""
    in_topic, out_topic, dlq_topic = topics
    produce(bootstrap, in_topic, [b"one", b"two"], same_key=True)
    runner = make_runner(
        bootstrap, unique, Slow(out_topic), in_topic, True, max_wait_ms=1500, max_poll_interval_ms=6000
    )
    runner.consumer_overrides = {"session.timeout.ms": 6000}
    run_until_drained(runner, 2)
    assert len(read_topic(bootstrap, out_topic, idle_s=1)) == 2
    assert committed(bootstrap, f"g{unique}", in_topic) == 2


def test_a_batch_failure_is_isolated_to_its_item(bootstrap: str, unique: str, topics: tuple[str, str, str]) -> None:
    in_topic, out_topic, dlq_topic = topics
    produce(bootstrap, in_topic, [b"a", b"bug", b"c", b"d"], same_key=True)  # one partition: one batch
    handler = Echo(out_topic, batch_bug=True)
    run_until_drained(make_runner(bootstrap, unique, handler, in_topic, True, max_wait_ms=1500), 4)
    assert handler.calls == 1 + 4, "the failed batch, then each item on its own"
    assert len(read_topic(bootstrap, out_topic, idle_s=1)) == 3
    assert [m.value for m in read_topic(bootstrap, dlq_topic, idle_s=1)] == [b"bug"]
