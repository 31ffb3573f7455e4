"""The local S3 of the stack: moto's server (S3 + SQS) with bucket -> queue event notifications, like AWS."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from typing import Any

from local_stack.processes import free_port, spawn_detached, stop_detached, wait_until

ACCOUNT = "123456789012"
# created/removed objects, and tag changes: an object's readers are its mmrag-readers tag (document permissions)
_EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*", "s3:ObjectTagging:*")


def start_moto(state_dir: Path, port: int | None = None) -> str:
    """Starts moto's server (S3 + SQS) on loopback in its own session; returns its endpoint URL."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    exe = str(Path(sys.executable).with_name("moto_server"))
    spawn_detached([exe, "-H", "127.0.0.1", "-p", str(port)], state_dir / "moto.log", state_dir / "moto.json", url=url)
    wait_until(lambda: _answers(url), 30, f"local S3 at {url} (log: {state_dir / 'moto.log'})")
    return url


def stop_moto(state_dir: Path) -> None:
    stop_detached(state_dir / "moto.json")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/moto-api/", timeout=1):
            return True
    except OSError:
        return False


def ensure_bucket_with_queue(s3: Any, sqs: Any, bucket: str, queue: str) -> str:
    """Creates bucket and queue (idempotent) and points the bucket's created/removed events at the queue.

    Returns the queue URL. The same call works against AWS when the queue policy allows S3 to send.
    """
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
    queue_url = str(sqs.create_queue(QueueName=queue)["QueueUrl"])
    connect_bucket(s3, sqs, bucket, queue_url)
    return queue_url


def connect_bucket(s3: Any, sqs: Any, bucket: str, queue_url: str) -> bool:
    """Sends an existing bucket's created/removed/tagging events to the queue, keeping its other notification
    targets (a connection made before tagging events were sent is widened).

    Returns False when it was connected already. A missing bucket raises the client's NoSuchBucket error."""
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    config = s3.get_bucket_notification_configuration(Bucket=bucket)
    config.pop("ResponseMetadata", None)
    queues = config.setdefault("QueueConfigurations", [])
    if any(q.get("QueueArn") == arn and set(_EVENTS) <= set(q.get("Events", [])) for q in queues):
        return False
    queues[:] = [q for q in queues if q.get("QueueArn") != arn]
    queues.append({"QueueArn": arn, "Events": list(_EVENTS)})
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    return True
