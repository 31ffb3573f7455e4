"""Producing outputs with delivery tracking: what every stage does before it may commit or acknowledge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message

from mmrag.kafka_clients import encode_headers
from mmrag.messages import Output, output_headers, serialize


class Deliveries:
    """Collects delivery reports; after flush(), ``failures`` lists what Kafka refused."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.delivered = 0

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failures.append(f"{msg.topic()}: {err}")


def produce_outputs(producer: Any, outputs: Sequence[Output], deliveries: Deliveries | None = None) -> None:
    """Produces each output (standard headers added), waiting for queue space instead of dropping."""
    for out in outputs:
        kwargs: dict[str, Any] = {
            "key": out.key.encode() if out.key is not None else None,
            "value": serialize(out.value),
            "headers": encode_headers(output_headers(out)),
        }
        if out.partition is not None:
            kwargs["partition"] = out.partition
        if deliveries is not None:
            kwargs["on_delivery"] = deliveries
        while True:
            try:
                producer.produce(out.topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: let deliveries drain, then retry


def flush_or_raise(producer: Any, deliveries: Deliveries, timeout_s: float = 30) -> None:
    """Flushes; raises RuntimeError naming what was not delivered (the caller must not commit/acknowledge)."""
    left = producer.flush(timeout_s)
    if left or deliveries.failures:
        raise RuntimeError(f"{left} messages still queued, failures: {deliveries.failures[:3]}")
