"""The two embedder groups on the real broker: every extractor, poison inputs to the DLQ, a two-member group
split, and SIGKILL mid-batch with exactly-once effect on embeddings.v1."""

from __future__ import annotations

import re
import urllib.request

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from mmrag.ids import object_id
from mmrag.object_store import S3ObjectStore
from mmrag.pb.events_pb2 import EmbeddingBatch, MediaKind, ObjectEvent
from tests.documents import HTML, bomb_png, docx_bytes, pdf_bytes, png_bytes, words_image
from tests.kafka_tools import read_topic, wait_for

pytestmark = pytest.mark.kafka

TEXT, DOC, IMAGE = MediaKind.MEDIA_KIND_TEXT, MediaKind.MEDIA_KIND_DOCUMENT, MediaKind.MEDIA_KIND_IMAGE


def publish(deployment, objects: dict[str, tuple[bytes, int]]) -> None:  # type: ignore[no-untyped-def]
    """Uploads each object and puts its ObjectEvent on objects.v1 (what the producers do)."""
    store = S3ObjectStore(deployment.s3_settings(), "test")
    producer = Producer({"bootstrap.servers": deployment.endpoints.bootstrap_servers})
    for key, (data, kind) in objects.items():
        etag = store.put(deployment.bucket, key, data)["ETag"].strip('"')
        event = ObjectEvent(
            object_id=object_id(deployment.bucket, key),
            bucket=deployment.bucket,
            key=key,
            version=etag,
            etag=etag,
            size=len(data),
            media_kind=kind,
            event_time_ms=1,
            source="test",
        )
        producer.produce(
            f"{deployment.topic_prefix}objects.v1",
            key=event.object_id.encode(),
            value=event.SerializeToString(),
        )
    assert producer.flush(10) == 0


def batches(deployment, **kw: object) -> dict[str, list[EmbeddingBatch]]:  # type: ignore[no-untyped-def]
    found: dict[str, list[EmbeddingBatch]] = {}
    for m in read_topic(deployment.endpoints.bootstrap_servers, f"{deployment.topic_prefix}embeddings.v1", **kw):
        found.setdefault(m.key or "", []).append(EmbeddingBatch.FromString(m.value or b""))
    return found


def covering(found: dict[str, list[EmbeddingBatch]], wanted: set[str]) -> dict[str, list[EmbeddingBatch]] | None:
    return found if set(found) >= wanted else None


def dlq(deployment) -> dict[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    records = read_topic(deployment.endpoints.bootstrap_servers, f"{deployment.topic_prefix}dlq.v1", idle_s=1)
    return {m.key or "": m.headers for m in records}


def processed(service) -> float:  # type: ignore[no-untyped-def]
    text = urllib.request.urlopen(service.probe_url + "/metrics").read().decode()
    match = re.search(r'mmrag_messages_processed_total\{stage="\w+"\} ([0-9.]+)', text)
    return float(match.group(1)) if match else 0.0


def test_text_embedder_extracts_every_kind_and_dead_letters_poison(deployment) -> None:  # type: ignore[no-untyped-def]
    from local_stack.stack import start_services

    start_services([deployment.service("text_embedder", MMRAG_CLIP_TEXT_FOR_TEXT="true")])
    good = {
        "notes.md": (b"# Notes\nKafka consumer groups share partitions.", TEXT),
        "page.html": (HTML, DOC),
        "report.pdf": (pdf_bytes(["Kafka transactions commit offsets."], ["INVOICE 4711"]), DOC),
        "report.docx": (docx_bytes(["Quarterly report"], ["cell alpha"]), DOC),
        "shot.png": (png_bytes(words_image("HELLO KAFKA STREAMS")), IMAGE),
    }
    poison = {
        "latin1.txt": ("caf\xe9".encode("latin-1"), TEXT),
        "bad.pdf": (b"%PDF-1.7 garbage", DOC),
        "blank.txt": (b"  \n ", TEXT),
        "bomb.png": (bomb_png(9000), IMAGE),
    }
    publish(deployment, {**good, **poison})
    oid = {key: object_id(deployment.bucket, key) for key in {**good, **poison}}
    wait_for(lambda: len(dlq(deployment)) == len(poison), 120, "the poison objects on the DLQ")
    found = wait_for(lambda: covering(batches(deployment), {oid[k] for k in good}), 60, "all embeddings")

    assert set(found) == {oid[k] for k in good} and all(len(v) == 1 for v in found.values())
    pdf = found[oid["report.pdf"]][0]
    assert [c.page for c in pdf.chunks] == [1, 2] and "INVOICE 4711" in pdf.chunks[1].text
    assert "HELLO KAFKA STREAMS" in found[oid["shot.png"]][0].chunks[0].text
    assert "Sea anemones and starfish" in found[oid["page.html"]][0].chunks[0].text
    for [batch] in found.values():
        assert batch.model_id.startswith("all-MiniLM-L6-v2") and batch.clip_model_id.startswith("clip:")
        for c in batch.chunks:
            assert len(c.vector) == 384 and len(c.clip_text_vector) == 64 and c.text
    dead = dlq(deployment)
    assert set(dead) == {oid[k] for k in poison}
    assert all(h["dlq-stage"] == "text_embedder" and h["dlq-error-class"] == "PermanentError" for h in dead.values())
    assert "not UTF-8" in dead[oid["latin1.txt"]]["dlq-error-message"]
    assert "not a readable PDF" in dead[oid["bad.pdf"]]["dlq-error-message"]
    assert "no text to index" in dead[oid["blank.txt"]]["dlq-error-message"]
    assert "DecompressionBomb" in dead[oid["bomb.png"]]["dlq-error-message"]


def test_two_vision_embedders_split_partitions_and_embed_each_image_once(deployment) -> None:  # type: ignore[no-untyped-def]
    from local_stack.stack import start_services

    members = start_services([deployment.service("vision_embedder", str(i), MMRAG_MAX_BATCH="4") for i in (0, 1)])
    admin = AdminClient({"bootstrap.servers": deployment.endpoints.bootstrap_servers})

    group = deployment.topic_prefix + "embedder-vision"

    def both_assigned() -> bool:  # a member counts once it holds partitions (joined and the rebalance done)
        described = admin.describe_consumer_groups([group])[group].result()
        held = [m for m in described.members if m.assignment and m.assignment.topic_partitions]
        return len(held) == 2 and str(described.state).endswith("STABLE")

    wait_for(both_assigned, 60, "both members holding partitions")
    colours = ["red", "blue", "green", "yellow", "purple", "orange"]
    images = {
        f"img/{c}-{i}.png": (png_bytes(words_image(c.upper(), size=(64, 64))), IMAGE) for c in colours for i in range(3)
    }
    images["img/corrupt.png"] = (b"\x89PNG\r\n\x1a\nnope", IMAGE)
    publish(deployment, images)
    wanted = {object_id(deployment.bucket, k) for k in images if "corrupt" not in k}
    found = wait_for(lambda: covering(batches(deployment), wanted), 120, "every image embedded")
    assert set(found) == wanted and all(len(v) == 1 for v in found.values())
    assert all(len(v[0].chunks[0].vector) == 64 for v in found.values())
    counts = [processed(m) for m in members]
    assert all(c > 0 for c in counts) and sum(counts) == len(wanted), counts  # both members worked, once each
    assert list(dlq(deployment)) == [object_id(deployment.bucket, "img/corrupt.png")]


def test_vision_embedder_killed_mid_batch_has_exactly_once_effect(deployment) -> None:  # type: ignore[no-untyped-def]
    from local_stack.stack import start_services

    held = deployment.service("vision_embedder", MMRAG_FAULT_HOLD_BEFORE_COMMIT_S="600", MMRAG_MAX_WAIT_MS="2000")
    start_services([held])
    images = {f"img/{i}.png": (png_bytes(words_image(str(i), size=(64, 64))), IMAGE) for i in range(8)}
    publish(deployment, images)
    wait_for((deployment.state_dir / "hold-vision_embedder").exists, 90, "a held, uncommitted transaction")
    assert batches(deployment, committed_only=False, idle_s=1), "the held transaction wrote its embeddings"
    held.kill()
    start_services([deployment.service("vision_embedder")])
    wanted = {object_id(deployment.bucket, k) for k in images}
    found = wait_for(lambda: covering(batches(deployment), wanted), 90, "every image embedded")
    assert {k: len(v) for k, v in found.items()} == {k: 1 for k in wanted}
    everything = batches(deployment, committed_only=False)
    assert sum(len(v) for v in everything.values()) > len(wanted), "the aborted batch is in the log, not visible"
