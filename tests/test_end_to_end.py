"""The walking skeleton: uploads travel S3 -> SQS -> objects.v1 -> embedders -> updater -> Milvus -> gRPC Search."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from mmrag.grpc_tls import query_channel
from mmrag.object_store import S3ObjectStore
from mmrag.pb import query_pb2, query_pb2_grpc
from producers.upload import upload_files
from tests.documents import circle_png
from tests.kafka_tools import Landed, read_topic, wait_for

pytestmark = pytest.mark.kafka

KAFKA_DOC = """# Consumer groups
Kafka consumer groups split the partitions of a topic between their members. Each partition is read by exactly
one member of the group, and the group commits offsets to remember how far it has read.
"""


def search(port: int, text: str = "", image: bytes = b"", top_k: int = 10) -> query_pb2.SearchResponse:
    with query_channel(f"127.0.0.1:{port}") as channel:  # TLS on a secured stack (MMRAG_GRPC_CA)
        stub = query_pb2_grpc.QueryServiceStub(channel)
        return stub.Search(query_pb2.SearchQuery(text=text, image=image, top_k=top_k), timeout=10)


def found_ids(port: int, **query: object) -> set[str]:
    return {r.object_id for r in search(port, **query).results}  # type: ignore[arg-type]


def dead_letters(bootstrap: str, prefix: str, oid: str) -> list[Landed]:
    return [m for m in read_topic(bootstrap, f"{prefix}dlq.v1") if m.key == oid]


def assert_dead_lettered(bootstrap: str, prefix: str, oid: str) -> None:
    """Both embedders read the corrupt image (vision for CLIP, text for OCR): each dead-letters it, once."""
    wait_for(lambda: len(dead_letters(bootstrap, prefix, oid)) >= 2, 30, f"{oid} on the DLQ from both embedders")
    records = dead_letters(bootstrap, prefix, oid)
    assert sorted(m.headers["dlq-stage"] for m in records) == ["text_embedder", "vision_embedder"]
    for m in records:
        assert m.headers["dlq-error-class"] == "PermanentError"
        assert oid in m.headers["dlq-error-message"] and "cannot decode image" in m.headers["dlq-error-message"]
        assert m.headers["dlq-source-topic"] == f"{prefix}objects.v1"


def assert_probes_and_metrics(services: list) -> None:  # type: ignore[type-arg]
    """Every deployable serves its probes and metrics."""
    for service in services:
        assert urllib.request.urlopen(service.probe_url + "/healthz").status == 200
        assert urllib.request.urlopen(service.probe_url + "/readyz").status == 200
    metrics = {s.name: urllib.request.urlopen(s.probe_url + "/metrics").read().decode() for s in services}
    assert 'mmrag_dlq_total{stage="vision_embedder"} 1.0' in metrics["vision_embedder"]
    assert 'mmrag_messages_processed_total{stage="index_updater"}' in metrics["index_updater"]
    assert "mmrag_search_seconds_count" in metrics["query_service"]


def test_upload_search_delete_and_dlq(deployment, bootstrap: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from local_stack.stack import start_services

    services = start_services(deployment.all_services())
    store = S3ObjectStore(deployment.s3_settings(), "test")
    bucket, port = deployment.bucket, deployment.grpc_port
    circle = circle_png()
    files = {
        "kafka groups.md": KAFKA_DOC.encode(),
        "circle.png": circle,
        "broken.png": b"\x89PNG\r\n\x1a\n this is not really a png",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    upload_files(store, bucket, [tmp_path / "kafka groups.md"], prefix="docs")
    upload_files(store, bucket, [tmp_path / "circle.png", tmp_path / "broken.png"], prefix="images")

    text_id, image_id = f"{bucket}/docs/kafka groups.md", f"{bucket}/images/circle.png"
    wait_for(
        lambda: text_id in found_ids(port, text="how do kafka consumer groups share partitions"),
        90,
        "the text document to be searchable",
    )
    wait_for(lambda: image_id in found_ids(port, image=circle), 60, "the image to be searchable")

    reply = search(port, text="how do kafka consumer groups share partitions")
    assert not reply.partial and list(reply.missing_shards) == []
    top = reply.results[0]
    assert top.object_id == text_id and top.has_text
    assert "consumer groups" in top.text
    assert KAFKA_DOC[top.char_start : top.char_end] == top.text
    by_image = search(port, image=circle).results[0]
    assert by_image.object_id == image_id and by_image.has_image and by_image.score == pytest.approx(0.6**2, abs=1e-3)

    assert_dead_lettered(bootstrap, deployment.topic_prefix, f"{bucket}/images/broken.png")
    assert_probes_and_metrics(services)

    store.delete(bucket, "docs/kafka groups.md")
    wait_for(
        lambda: text_id not in found_ids(port, text="how do kafka consumer groups share partitions"),
        60,
        "the deleted document to leave the results",
    )
    assert image_id in found_ids(port, image=circle)
