"""Search on the real stack (S3 -> SQS -> Kafka -> embedders -> updater -> Milvus -> retrieval workers -> gRPC):
results per object by default and chunks on request; filters by bucket, key prefix, modality, content type,
event time and object ids on text and image queries; an invalid filter is INVALID_ARGUMENT naming its field; with
the retrieval workers gone, a query answered before gets its cached answer (from_cache) and a new one is partial;
a 5 MB image query is answered and one over MMRAG_MAX_QUERY_IMAGE_BYTES is INVALID_ARGUMENT naming the limit."""

from __future__ import annotations

import io
import time
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from local_stack.s3 import ensure_bucket_with_queue
from mmrag.object_store import S3ObjectStore, s3_client
from mmrag.pb import query_pb2, query_pb2_grpc
from tests.documents import circle_png
from tests.kafka_tools import wait_for

pytestmark = pytest.mark.kafka

KAFKA = "Kafka consumer groups split the partitions of a topic between their members and commit their offsets."
# Long enough for several MiniLM chunks (256 tokens each), every one about consumer groups.
LONG_KAFKA = " ".join(
    f"Part {i}: a consumer group rebalances when member {i} joins, and the partitions of the topic move to it."
    for i in range(60)
)
HTML = "<html><body><h1>Consumer groups</h1><p>Kafka consumer groups share partitions.</p></body></html>"
TIDES = "Tide pools hold sea stars, anemones and nudibranchs at low tide on rocky shores."


class Client:
    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = query_pb2_grpc.QueryServiceStub(self.channel)

    def reply(self, text: str = "", image: bytes = b"", top_k: int = 20, **scope: Any) -> Any:
        raw = scope.pop("raw_chunks", False)
        query = query_pb2.SearchQuery(
            text=text, image=image, top_k=top_k, raw_chunks=raw, filter=query_pb2.Filter(**scope)
        )
        return self.stub.Search(query, timeout=15)

    def search(self, text: str = "", image: bytes = b"", top_k: int = 20, **scope: Any) -> list[Any]:
        reply = self.reply(text, image, top_k, **scope)
        assert not reply.partial, reply.missing_shards
        return list(reply.results)

    def found(self, text: str = "", image: bytes = b"", **scope: Any) -> set[str]:
        """For waiting: the object ids of a complete answer (none while a shard does not answer yet)."""
        reply = self.reply(text, image, **scope)
        return set() if reply.partial else {r.object_id for r in reply.results}

    def ids(self, text: str = "", image: bytes = b"", **scope: Any) -> set[str]:
        return {r.object_id for r in self.search(text, image, **scope)}

    def event_time(self, oid: str) -> int:
        return int(self.stub.GetObjectStatus(query_pb2.ObjectStatusRequest(object_id=oid), timeout=10).event_time_ms)


def test_results_per_object_and_filters_on_text_and_image_queries(deployment: Any) -> None:  # noqa: PLR0915
    from local_stack.stack import start_services

    names = ["sqs_bridge", "normalizer", "text_embedder", "vision_embedder", "index_updater", "query_service"]
    services = [deployment.service(n) for n in names]
    services += [deployment.service("retrieval_worker", str(k), MMRAG_SHARD=str(k)) for k in range(deployment.shards)]
    start_services(services)
    s3 = deployment.s3_settings()
    other = f"{deployment.bucket}-other"
    ensure_bucket_with_queue(s3_client(s3), s3_client(s3, "sqs"), other, deployment.queue)
    store = S3ObjectStore(s3, "test")
    b = deployment.bucket
    uploads = [
        (b, "docs/kafka.md", KAFKA.encode(), "text/markdown"),
        (b, "docs/long-kafka.txt", LONG_KAFKA.encode(), "text/plain"),
        (b, "docs/groups.html", HTML.encode(), "text/html"),
        (b, "docs/tides.txt", TIDES.encode(), "text/plain"),
        (b, "images/circle.png", circle_png(), "image/png"),
        (other, "docs/kafka-copy.md", KAFKA.encode(), "text/markdown"),
    ]
    for bucket, key, data, content_type in uploads:
        store.put(bucket, key, data, content_type)
    client = Client(deployment.grpc_port)
    every = {f"{bucket}/{key}" for bucket, key, _, _ in uploads}
    wait_for(lambda: client.found("kafka consumer groups", top_k=50) >= every - {f"{b}/images/circle.png"}, 240, "docs")
    wait_for(lambda: f"{b}/images/circle.png" in client.found(image=circle_png()), 120, "the image")
    time.sleep(1.1)
    late = f"{b}/notes/late-kafka.md"
    store.put(b, "notes/late-kafka.md", KAFKA.encode(), "text/markdown")
    wait_for(lambda: late in client.found("kafka consumer groups", object_ids=[late]), 120, "the late note")
    every.add(late)

    question = "how do kafka consumer groups share partitions"
    found = client.search(question, top_k=50)
    assert {r.object_id for r in found} == every  # everything, each object once
    assert len(found) == len(every)
    long_id = f"{b}/docs/long-kafka.txt"
    chunks = [r for r in client.search(question, top_k=50, raw_chunks=True) if r.object_id == long_id]
    assert len(chunks) >= 3 and len({r.chunk_index for r in chunks}) == len(chunks)
    (grouped,) = [r for r in found if r.object_id == long_id]
    assert grouped.score == pytest.approx(max(r.score for r in chunks), abs=1e-5)  # its best chunk

    texts = every - {f"{b}/images/circle.png"}
    assert client.ids(question, buckets=[other]) == {f"{other}/docs/kafka-copy.md"}
    assert client.ids(question, key_prefix="docs/") == {o for o in every if "/docs/" in o}
    assert client.ids(question, buckets=[b], key_prefix="docs/k") == {f"{b}/docs/kafka.md"}
    assert client.ids(question, modality="image") == {f"{b}/images/circle.png"}
    assert client.ids(question, modality="text") == texts
    assert client.ids(question, content_types=["text/html"]) == {f"{b}/docs/groups.html"}
    markdown = {o for o in every if o.endswith(".md")}  # plain text by its bytes, markdown by its extension
    assert markdown and client.ids(question, content_types=["text/markdown"]) == markdown
    assert client.ids(question, content_types=["image/png", "text/html"]) == {
        f"{b}/docs/groups.html",
        f"{b}/images/circle.png",
    }
    assert client.ids(question, event_time_from_ms=client.event_time(late)) == {late}
    assert late not in client.ids(question, event_time_to_ms=client.event_time(late))
    assert client.ids(question, object_ids=[f"{b}/docs/tides.txt", f"{b}/missing"]) == {f"{b}/docs/tides.txt"}
    assert client.ids(image=circle_png(), key_prefix="images/") == {f"{b}/images/circle.png"}
    assert f"{b}/images/circle.png" not in client.ids(image=circle_png(), modality="text", top_k=50)
    assert client.ids(image=circle_png(), buckets=[other]) <= {f"{other}/docs/kafka-copy.md"}

    with pytest.raises(grpc.RpcError) as refused:
        client.search(question, buckets=["Not_A_Bucket"])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "filter.buckets[0]" in (refused.value.details() or "")
    with pytest.raises(grpc.RpcError) as refused:
        client.search(question, event_time_from_ms=5, event_time_to_ms=5)
    assert "filter.event_time_to_ms" in (refused.value.details() or "")
    for text, image, said in (("  \n ", b"", "white space"), ("", b"not an image at all", "not PNG, JPEG")):
        with pytest.raises(grpc.RpcError) as refused:
            client.search(text, image)
        details = refused.value.details() or ""
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and said in details and "BytesIO" not in details

    # Image queries over gRPC's 4 MiB default are taken; over the service's own limit they are refused by name.
    noise = Image.frombytes("RGB", (1400, 1200), np.random.default_rng(0).integers(0, 256, 1400 * 1200 * 3, np.uint8))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    assert len(buf.getvalue()) > 5_000_000
    assert client.search(image=buf.getvalue(), top_k=3)  # a 5 MB image query answers
    with pytest.raises(grpc.RpcError) as refused:
        client.search(image=b"\x89PNG" + bytes(16 << 20))  # over the 16 MiB limit, within what gRPC takes
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "MMRAG_MAX_QUERY_IMAGE_BYTES" in (refused.value.details() or "")

    # Retrieval stops answering: the same query gets its last complete answer, flagged from the cache and partial
    # with the shards that did not answer (a dead shard is not a cache hit); a new one is partial.
    before = client.reply(question, top_k=50)
    assert not before.partial
    for service in services:
        if service.name.startswith("retrieval_worker"):
            service.kill()
    time.sleep(6)  # past the 5 s in which a kept answer answers at once: retrieval is asked and times out
    again = client.reply(question, top_k=50)
    assert again.from_cache and again.partial and list(again.missing_shards) == [0, 1]
    assert [r.object_id for r in again.results] == [r.object_id for r in before.results]
    other = client.reply("where do nudibranchs live", top_k=5)
    assert other.partial and not other.from_cache and list(other.missing_shards) == [0, 1]
