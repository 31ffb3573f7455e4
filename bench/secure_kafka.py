"""What the secured Kafka (SASL_SSL, SCRAM-SHA-512, ACLs per principal) costs against plaintext, in one run:

    uv run --frozen --no-sync python -m bench.secure_kafka [--records 20000] [--size 1024] [--hops 300]

Starts a plaintext single-node cluster, measures, stops it; then the secured one the same way (one at a time, so
neither disturbs the other). Per cluster: start-up to ready (format included; secured also makes the CA, the node's
certificate and every principal's SCRAM user), the topics of one deployment and (secured) its ACLs until the broker
enforces them, produce throughput
(``--records`` of ``--size`` bytes through the stages' producer settings: idempotent, acks=all, lz4), group consume
throughput, and one-hop latency (produce with linger 0, flush, until an assigned consumer sees it; ``--hops``
times: the step a Search takes twice per shard). The secured client is the text embedder's principal writing
embeddings.v1 and the index updater's reading it (their ACLs are checked on every request). Prints each figure and
the secured/plaintext ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from local_stack.kafka_broker import stop_cluster
from local_stack.secure_kafka import apply_acls
from local_stack.stack import start_kafka
from mmrag.access import principals
from mmrag.kafka_clients import consumer_config, producer_config
from mmrag.topics import Topics, ensure_topics

PREFIX = "bench."
WARM_UP_HOPS = 20


def _identity(cluster: Any, user: str) -> dict[str, Any]:
    return cluster.security.client_config(user) if cluster.security else {}


def _produce(bootstrap: str, identity: dict[str, Any], topic: str, records: int, size: int) -> float:
    producer = Producer({**producer_config(bootstrap), **identity})
    value = bytes(size)
    started = time.perf_counter()
    for i in range(records):
        while True:
            try:
                producer.produce(topic, value, key=str(i).encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    return records / (time.perf_counter() - started)


def _consume(bootstrap: str, identity: dict[str, Any], topic: str, records: int, group: str) -> float:
    consumer = Consumer({**consumer_config(bootstrap, group), **identity})
    consumer.subscribe([topic])
    seen, started = 0, 0.0
    while seen < records:
        batch = consumer.consume(1000, 1.0)
        if batch and not started:
            started = time.perf_counter()  # from the first record: the group join is not throughput
        seen += sum(1 for m in batch if m.error() is None)
    elapsed = time.perf_counter() - started
    consumer.close()
    return seen / elapsed


def _hops(
    bootstrap: str, clients: tuple[dict[str, Any], dict[str, Any]], topic: str, group: str, hops: int
) -> list[float]:
    writer, reader = clients
    producer = Producer({**producer_config(bootstrap), "linger.ms": 0, **writer})
    consumer = Consumer({**consumer_config(bootstrap, group, **{"fetch.wait.max.ms": 5}), **reader})
    high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=15)[1]
    consumer.assign([TopicPartition(topic, 0, high)])
    took = []
    for _ in range(hops + WARM_UP_HOPS):
        started = time.perf_counter()
        producer.produce(topic, b"ping", partition=0)
        producer.flush(10)
        while (msg := consumer.poll(5)) is None or msg.error() is not None:
            pass
        took.append((time.perf_counter() - started) * 1000)
    consumer.close()
    return took[WARM_UP_HOPS:]  # the first ones open connections (TLS and SASL handshakes when secured)


def measure(secure: bool, args: argparse.Namespace) -> dict[str, float]:
    """Every figure of one cluster (started here, stopped at the end)."""
    kafka_dir = Path(tempfile.mkdtemp(prefix="bench-secure-")) / "kafka"
    started = time.perf_counter()
    cluster = start_kafka(kafka_dir, secure=secure)
    figures = {"start-up to ready (s)": time.perf_counter() - started}
    try:
        bootstrap, admin = cluster.bootstrap_servers, _identity(cluster, "admin")
        started = time.perf_counter()
        ensure_topics(bootstrap, Topics(PREFIX), client=admin)
        figures["topics of a deployment (s)"] = time.perf_counter() - started
        started = time.perf_counter()
        if secure:
            apply_acls(AdminClient({"bootstrap.servers": bootstrap, **admin}), principals(PREFIX))
        figures["ACLs created and enforced (s)"] = time.perf_counter() - started
        topic = Topics(PREFIX).embeddings
        writer, reader = _identity(cluster, "text_embedder"), _identity(cluster, "index_updater")
        figures["produce (records/s)"] = _produce(bootstrap, writer, topic, args.records, args.size)
        group = f"{PREFIX}index-updater" if secure else f"bench-{uuid.uuid4().hex[:8]}"
        figures["consume (records/s)"] = _consume(bootstrap, reader, topic, args.records, group)
        took = _hops(bootstrap, (writer, reader), topic, group, args.hops)
        cuts = statistics.quantiles(took, n=100)
        figures["one hop p50 (ms)"], figures["one hop p99 (ms)"] = cuts[49], cuts[98]
    finally:
        stop_cluster(kafka_dir)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--hops", type=int, default=300)
    args = parser.parse_args()
    plain = measure(False, args)
    secured = measure(True, args)
    print(f"{'':36} {'plaintext':>12} {'SASL_SSL':>12} {'ratio':>7}")
    for name, value in plain.items():
        ratio = f"{secured[name] / value:7.2f}" if value > 0.01 else "      -"
        print(f"{name:36} {value:12.2f} {secured[name]:12.2f} {ratio}")


if __name__ == "__main__":
    main()
