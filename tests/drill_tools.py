"""Tools of the fault drills (tests/test_outages.py): readiness probes, reading a topic to its end while a broker
may be dead, stopping deployables with their stop times, and the figures a drill reports."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from local_stack.services import Service
from mmrag.kafka_clients import decode_headers
from tests.kafka_tools import Landed
from tests.test_bounded_work import peak_rss


class Figures:
    """What a drill measured, printed as one JSON line for the closing note."""

    def __init__(self, drill: str) -> None:
        self.drill = drill
        self.values: dict[str, Any] = {}
        self.rss: dict[str, int] = {}

    def sample_rss(self, named_pids: Iterable[tuple[str, int | None]]) -> None:
        """Keeps the highest peak RSS (MiB) seen per process name (a restarted process starts a new peak)."""
        for name, pid in named_pids:
            if pid is not None:
                self.rss[name] = max(self.rss.get(name, 0), peak_rss(pid) >> 20)

    def print(self) -> None:
        print(f"\nDRILL {self.drill}: " + json.dumps({**self.values, "peak_rss_mib": self.rss}, sort_keys=True))


def readiness(service: Service) -> tuple[int, str]:
    """The /readyz status code and body."""
    return probe(service, "readyz")


def probe(service: Service, path: str) -> tuple[int, str]:
    """A probe's (/healthz, /readyz) status code and body; 0 and the error when it does not answer."""
    try:
        with urllib.request.urlopen(f"{service.probe_url}/{path}", timeout=2) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def is_ready(service: Service) -> bool:
    return readiness(service)[0] == 200


def wait_until(check: Callable[[], Any], timeout_s: float, interval_s: float = 0.5) -> Any:
    """``check()``'s first truthy value, or its last value after ``timeout_s`` (the caller asserts)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(interval_s)


def red_because(service: Service, *words: str) -> str:
    """The /readyz body while ``service`` backs off from an outage whose reason names ``words``; '' otherwise."""
    code, body = readiness(service)
    backing_off = code == 503 and "dependency unavailable" in body
    return body if backing_off and all(w.lower() in body.lower() for w in words) else ""


def read_to_end(bootstrap: str, topic: str, timeout_s: float = 60) -> list[Landed]:
    """Every committed record of ``topic`` up to each partition's end, read without a group (no join to wait for):
    an empty answer means an empty topic, never a reader that gave up early (a broker may be dead)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        partitions = set(consumer.list_topics(topic, timeout=15).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        found: list[Landed] = []
        ended: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while ended != partitions:
            assert time.monotonic() < deadline, f"{topic}: partitions {sorted(partitions - ended)} not read to the end"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ended.add(msg.partition() or 0)
                continue
            key = msg.key()
            value = msg.value()
            found.append(
                Landed(
                    key.decode() if isinstance(key, bytes) else key,
                    value.encode() if isinstance(value, str) else value,
                    decode_headers(msg.headers()),  # type: ignore[arg-type]
                    msg.partition() or 0,
                    msg.offset() or 0,
                    msg.timestamp()[1],
                )
            )
        return found
    finally:
        consumer.close()


def assert_all_serving(services: list[Service]) -> None:
    """No deployable died, and each is ready again (an outage leaves readiness red only while it lasts)."""
    for service in services:
        assert service.alive(), f"{service.name} died:\n{service.log_tail()}"
        ready = wait_until(partial(is_ready, service), 30)
        assert ready, f"{service.name} not ready after the outage: {readiness(service)}"


def stop_times(services: list[Service], timeout_s: float = 30) -> dict[str, float]:
    """SIGTERMs every service at once; seconds each took to exit (timeout_s: it did not, and was killed)."""
    started = time.monotonic()
    for service in services:
        os.killpg(service.pid or 0, signal.SIGTERM)
    took: dict[str, float] = {}
    while len(took) < len(services) and time.monotonic() - started < timeout_s:
        took |= {s.name: round(time.monotonic() - started, 1) for s in services if s.name not in took and not s.alive()}
        time.sleep(0.1)
    for service in services:
        if service.name not in took:
            service.kill()
            took[service.name] = timeout_s
    return took


def busiest_broker(bootstrap: str, prefix: str) -> int:
    """The broker that leads the most partitions of the deployment's topics (the kill that hurts most)."""
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15).topics
    leaders = [p.leader for name, t in topics.items() if name.startswith(prefix) for p in t.partitions.values()]
    replicas = {len(p.replicas) for name, t in topics.items() if name.startswith(prefix) for p in t.partitions.values()}
    assert replicas == {3}, f"topics of a 3-broker stack are created at RF 3, found {replicas}"
    return max(set(leaders), key=leaders.count)


def wait_for_transactions(bootstrap: str, timeout_s: float = 180) -> None:
    """Waits until a new cluster's transaction coordinators serve (its first transactional producer creates
    __transaction_state at RF 3, which on a busy machine takes longer than a deployable's 30 s init_transactions)."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"warm-up-{time.time_ns()}"})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            producer.init_transactions(30)
            return
        except KafkaException as exc:
            if not exc.args[0].retriable() or time.monotonic() > deadline:
                raise


def dump_stacks(services: list[Service]) -> None:
    """For a drill that failed: every live service started with PYTHONFAULTHANDLER=1 writes the Python stacks of
    all its threads into its log (SIGABRT; the process ends), so the report can say where it was stuck."""
    for service in services:
        if service.alive() and service.env.get("PYTHONFAULTHANDLER") and service.pid:
            os.kill(service.pid, signal.SIGABRT)
    time.sleep(2)
