"""Producer throughput on the local stack: SQS -> Kafka (the bridge) and backfill -> Kafka, in events per second.

    uv run python -m bench.producers [--notifications 1000] [--objects 5000]

Starts its own Kafka, local S3 (moto) and topics in a temporary directory, fills a queue with one-record S3
notifications and a bucket with small objects, then times the SQS bridge draining the queue (receive, produce,
flush, delete) and a backfill listing the bucket (transactions of 500 with their checkpoint). Both publish onto
s3-events.v1; the local S3 is the likely bottleneck, so these are lower bounds for a real S3.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console

from local_stack.stack import Deployment, start_infra, stop_infra
from mmrag.object_store import s3_client
from producers.backfill import BackfillSettings, run_backfill
from producers.backfill_progress import BackfillProgress
from producers.event_source import SourceBatch
from producers.publisher import ChangePublisher
from producers.s3_events import S3Change
from producers.sqs_bridge import STAGE, SqsBridgeSettings, SqsSource


def fill_queue(dep: Deployment, count: int) -> None:
    sqs = s3_client(dep.s3_settings(), "sqs")
    sqs.purge_queue(QueueUrl=dep.queue_url)  # the test event the notification configuration sent
    start_ms = int(time.time() * 1000)
    bodies = [
        S3Change(dep.bucket, f"bench/n-{i:06d}.txt", "ObjectCreated:Put", start_ms + i, 10, f"e{i}").to_body().decode()
        for i in range(count)
    ]

    def send(offset: int) -> None:
        entries = [{"Id": str(j), "MessageBody": b} for j, b in enumerate(bodies[offset : offset + 10])]
        sqs.send_message_batch(QueueUrl=dep.queue_url, Entries=entries)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send, range(0, count, 10)))


class TimedSqsSource(SqsSource):
    """The bridge's SQS source, timing its calls to SQS (receive, delete) apart from the Kafka side."""

    seconds = 0.0

    def receive(self) -> SourceBatch:
        started = time.monotonic()
        try:
            return super().receive()
        finally:
            self.seconds += time.monotonic() - started

    def acknowledge(self, batch: SourceBatch, problems: Sequence[str | None]) -> None:
        started = time.monotonic()
        super().acknowledge(batch, problems)
        self.seconds += time.monotonic() - started


def bench_sqs(dep: Deployment, count: int) -> tuple[float, float]:
    """(events/s end to end, share of the time spent in SQS calls)."""
    fill_queue(dep, count)
    env = dep.env()
    settings = SqsBridgeSettings(
        bootstrap_servers=env["MMRAG_BOOTSTRAP_SERVERS"],
        topic_prefix=dep.topic_prefix,
        s3_endpoint_url=env["MMRAG_S3_ENDPOINT_URL"],
        sqs_queue_url=dep.queue_url,
    )
    source = TimedSqsSource(settings)
    publisher = ChangePublisher(settings, source, STAGE)
    publisher.start()
    started, done = time.monotonic(), 0
    while done < count:
        done += publisher.step() or 0
    elapsed = time.monotonic() - started
    return count / elapsed, source.seconds / elapsed


def bench_backfill(dep: Deployment, count: int) -> float:
    bucket = f"bench-{dep.bucket}"
    s3 = s3_client(dep.s3_settings())
    s3.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"h/{i:06d}.txt", Body=b"x" * 64), range(count)))
    settings = BackfillSettings(
        bootstrap_servers=dep.endpoints.bootstrap_servers,
        topic_prefix=dep.topic_prefix,
        s3_endpoint_url=dep.endpoints.s3_endpoint_url,
        backfill_uri=f"s3://{bucket}/h/",
        backfill_batch=500,
    )
    progress = BackfillProgress("bench backfill", Console(file=io.StringIO()))
    started = time.monotonic()
    emitted = run_backfill(settings, threading.Event(), progress)
    assert emitted == count, f"backfill emitted {emitted} of {count}"
    return count / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notifications", type=int, default=1000)
    parser.add_argument("--objects", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        endpoints = start_infra(state)
        try:
            unique = uuid.uuid4().hex[:8]
            dep = Deployment(state, endpoints, state / "no-clip", topic_prefix=f"bench{unique}.", bucket=f"b-{unique}")
            dep.prepare()
            sqs_rate, in_sqs = bench_sqs(dep, args.notifications)
            print(
                f"SQS -> Kafka (sqs_bridge):  {args.notifications} notifications, {sqs_rate:,.0f} events/s "
                f"({in_sqs:.0%} of the time in SQS receive/delete calls)"
            )
            backfill_rate = bench_backfill(dep, args.objects)
            print(f"backfill -> Kafka:          {args.objects} objects, {backfill_rate:,.0f} events/s (incl. counting)")
        finally:
            stop_infra(state)


if __name__ == "__main__":
    main()
