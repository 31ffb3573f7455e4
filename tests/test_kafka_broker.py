"""Real Kafka brokers (jars from Maven Central, run by local_stack.kafka_broker): durability and failover."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from local_stack.kafka_broker import KafkaCluster, load_cluster, start_cluster, stop_cluster
from tests.kafka_tools import create_topics

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(not (shutil.which("java") and shutil.which("mvn")), reason="needs java and mvn on PATH"),
]


def _leader(bootstrap: str, topic: str, timeout_s: float = 30) -> int:
    """Leader of partition 0, once metadata names one (right after creation or a failover it may not yet)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
        if 0 in partitions and partitions[0].leader >= 0:
            return int(partitions[0].leader)
        time.sleep(0.2)
    raise AssertionError(f"no leader for {topic}-0 within {timeout_s}s")


def _idempotent_producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})


def _high_watermark(consumer: Consumer, topic: str, deadline: float) -> int:
    while True:
        try:
            return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
        except KafkaException:  # NOT_LEADER_FOR_PARTITION while metadata catches up with a failover: retry
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _read_all(bootstrap: str, topic: str, timeout_s: float = 60) -> list[bytes]:
    """Every value in partition 0 from the start up to the current high watermark (duplicates included)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}", "enable.auto.commit": False}
    )
    deadline = time.monotonic() + timeout_s
    try:
        high = _high_watermark(consumer, topic, deadline)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        values: list[bytes] = []
        next_offset = 0
        while next_offset < high:
            assert time.monotonic() < deadline, f"read {len(values)} of {high} messages in {timeout_s}s"
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            values.append(msg.value() or b"")
            next_offset = (msg.offset() or 0) + 1
        return values
    finally:
        consumer.close()


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


@pytest.mark.timeout(180)
def test_single_node_round_trip_and_data_survive_a_restart(tmp_path: Path) -> None:
    base = tmp_path / "kafka"
    cluster = start_cluster(base)
    try:
        create_topics(cluster.bootstrap_servers, ["events"], 1)
        values = [f"event-{i:03d}".encode() for i in range(100)]
        failures: list[KafkaError] = []
        producer = _idempotent_producer(cluster.bootstrap_servers)
        for value in values:
            producer.produce("events", value, on_delivery=lambda err, _msg: failures.extend([err] if err else []))
        assert producer.flush(30) == 0 and failures == []
        assert _read_all(cluster.bootstrap_servers, "events") == values

        pids = [node.pid for node in cluster.nodes if node.pid is not None]
        cluster.stop()
        assert not cluster.is_running() and pids and all(_gone(pid) for pid in pids)
        stored = load_cluster(base)
        assert stored is not None and [node.pid for node in stored.nodes] == [None]

        restarted = start_cluster(base)
        assert restarted.bootstrap_servers == cluster.bootstrap_servers  # ports and cluster id are reused
        assert _read_all(restarted.bootstrap_servers, "events") == values
    finally:
        stop_cluster(base)


def _produce_through_leader_kill(cluster: KafkaCluster, topic: str, leader: int) -> tuple[list[bytes], list[str]]:
    """Produce for ~10 s, SIGKILL `leader` after 2 s; returns the values sent and any delivery errors."""
    producer = _idempotent_producer(cluster.bootstrap_servers)
    sent: list[bytes] = []
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    started = time.monotonic()
    killed = False
    while time.monotonic() - started < 10:
        value = f"{len(sent):07d}".encode()
        try:
            producer.produce(topic, value, on_delivery=on_delivery)
        except BufferError:  # queue full while the partition fails over: let deliveries drain
            producer.poll(0.1)
            continue
        sent.append(value)
        producer.poll(0)
        if not killed and time.monotonic() - started > 2:
            cluster.kill_node(leader)
            killed = True
        time.sleep(0.001)
    assert producer.flush(120) == 0, "messages still undelivered after 120 s"
    return sent, errors


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_three_nodes_leader_kill_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    base = tmp_path / "kafka3"
    cluster = start_cluster(base, nodes=3, ready_timeout_s=120)  # 3 JVMs booting on a busy 2-core box can be slow
    try:
        servers = cluster.bootstrap_servers
        create_topics(servers, ["orders"], 1, replication=3, config={"min.insync.replicas": "2"})
        leader = _leader(servers, "orders")
        sent, errors = _produce_through_leader_kill(cluster, "orders", leader)
        assert errors == []
        assert not cluster.node(leader).is_alive()
        assert _leader(servers, "orders") != leader

        received = _read_all(servers, "orders")
        assert len(received) == len(set(received)), f"{len(received) - len(set(received))} duplicates"
        assert set(sent) - set(received) == set(), f"{len(set(sent) - set(received))} lost"
        assert received == sent  # and in order, each exactly once

        cluster.start_node(leader, ready_timeout_s=120)
        assert cluster.is_running()
    finally:
        stop_cluster(base)
    assert not cluster.is_running()
