"""The text embedder on the real broker with real local S3: objects over a limit go to the DLQ with the limit named
while the files behind them in the same partition are indexed, odd encodings and markup are read as what they are,
and the process's peak memory stays bounded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from mmrag.ids import object_id
from mmrag.object_store import S3ObjectStore
from mmrag.pb.events_pb2 import EmbeddingBatch, ObjectEvent
from producers.content_sniffing import sniff
from tests.documents import zip_bomb_docx
from tests.kafka_tools import read_topic, wait_for
from tests.test_odd_inputs import NESTED_HTML, SVG

pytestmark = pytest.mark.kafka
PEAK_RSS_BOUND = 2 << 30  # an unbounded 60 MB text once drove this process to 11.5 GB


def publish_in_one_partition(deployment: Any, objects: dict[str, bytes]) -> dict[str, str]:
    """Uploads each object and puts its ObjectEvent, sniffed as the normalizer does, on objects.v1 partition 0 in
    the given order; returns key -> object_id."""
    store = S3ObjectStore(deployment.s3_settings(), "test")
    producer = Producer({"bootstrap.servers": deployment.endpoints.bootstrap_servers})
    ids = {}
    for key, data in objects.items():
        etag = store.put(deployment.bucket, key, data)["ETag"].strip('"')
        sniffed = sniff(data[:8192])
        assert sniffed.supported, (key, sniffed.reason)
        ids[key] = object_id(deployment.bucket, key)
        event = ObjectEvent(
            object_id=ids[key],
            bucket=deployment.bucket,
            key=key,
            version=etag,
            etag=etag,
            size=len(data),
            media_kind=sniffed.media_kind,
            content_type=sniffed.content_type,
            event_time_ms=1,
            source="test",
        )
        producer.produce(
            f"{deployment.topic_prefix}objects.v1", key=ids[key].encode(), value=event.SerializeToString(), partition=0
        )
    assert producer.flush(10) == 0
    return ids


def peak_rss(pid: int) -> int:
    """The peak resident memory (VmHWM) of ``pid`` and its descendants, in bytes."""
    peak = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if int(entry.name) == pid or _descends(int(stat[1]), pid):
            hwm = [line for line in status.splitlines() if line.startswith("VmHWM:")]
            peak = max(peak, int(hwm[0].split()[1]) * 1024 if hwm else 0)
    return peak


def _descends(ppid: int, ancestor: int) -> bool:
    while ppid > 1:
        if ppid == ancestor:
            return True
        try:
            ppid = int((Path("/proc") / str(ppid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
    return False


def test_over_limit_objects_go_to_the_dlq_while_the_partition_keeps_flowing(deployment: Any) -> None:
    from local_stack.stack import start_services

    [embedder] = start_services(
        [deployment.service("text_embedder", MMRAG_MAX_CHUNKS="30", MMRAG_MAX_TEXT_BYTES="2000000")]
    )
    words = "Kafka partitions keep the order of events per key while consumer groups share them. "
    over = {
        "long.txt": (words * 18_000).encode(),  # 1.5 MB: under the size limit, far over 30 chunks
        "huge.txt": (words * 30_000).encode(),  # 2.5 MB: over MMRAG_MAX_TEXT_BYTES, never read
        "bomb.docx": zip_bomb_docx(80),  # an 80 MB body in a small file
    }
    good = {
        "small.md": b"# Tide pools\nSea anemones and starfish live in them.",
        "utf16.txt": ("\ufeffWörter in UTF-16: Ereignisse und Partitionen.").encode("utf-16-le"),
        "nested.html": NESTED_HTML,
        "diagram.svg": SVG,
    }
    ids = publish_in_one_partition(deployment, {**over, **good})

    def dlq() -> dict[str, str] | None:
        records = read_topic(deployment.endpoints.bootstrap_servers, f"{deployment.topic_prefix}dlq.v1", idle_s=1)
        found = {r.key or "": r.headers["dlq-error-message"] for r in records}
        return found if len(found) >= len(over) else None

    def embedded() -> dict[str, EmbeddingBatch] | None:
        found = read_topic(deployment.endpoints.bootstrap_servers, f"{deployment.topic_prefix}embeddings.v1", idle_s=1)
        batches = {m.key or "": EmbeddingBatch.FromString(m.value or b"") for m in found}
        return batches if set(batches) >= {ids[k] for k in good} else None

    dead = wait_for(dlq, 180, "the over-limit objects on the DLQ")
    batches = wait_for(embedded, 120, "the files behind them embedded")

    assert set(dead) == {ids[k] for k in over}
    assert "more than the limit of 30 chunks" in dead[ids["long.txt"]]
    assert "2520000 bytes is over the text limit of 2000000 bytes; not read" in dead[ids["huge.txt"]]
    assert "unpacks to 83886" in dead[ids["bomb.docx"]] and "over the limit of 67108864" in dead[ids["bomb.docx"]]
    assert set(batches) == {ids[k] for k in good}
    text = {key: " ".join(c.text for c in batches[ids[key]].chunks) for key in good}
    assert text["small.md"] == "# Tide pools\nSea anemones and starfish live in them."
    assert text["utf16.txt"] == "Wörter in UTF-16: Ereignisse und Partitionen."
    assert text["nested.html"] == "deep visible words"
    assert "KAFKA SVG" in text["diagram.svg"] and "SECRET" not in text["diagram.svg"]
    assert batches[ids["utf16.txt"]].content_type == "text/plain; charset=utf-16le"
    assert embedder.pid is not None
    peak = peak_rss(embedder.pid)
    print(f"text embedder peak RSS: {peak / 2**20:.0f} MiB")  # the figure for reports (pytest -s)
    assert 0 < peak < PEAK_RSS_BOUND, peak
    assert os.path.exists(embedder.log_path)
