"""The query side's request-reply client on the real broker: replies reach their request's queue, late and
undecodable replies are counted and dropped, and the reader goes on reading after either."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from mmrag.kafka_clients import encode_headers
from mmrag.pb.events_pb2 import GenerateChunk, SearchReply
from mmrag.request_reply import CORRELATION_ID
from mmrag.topics import Topics
from query_service.reply_client import RequestReplyClient

pytestmark = pytest.mark.kafka


def counter(name: str, topic: str) -> float:
    return REGISTRY.get_sample_value(name, {"topic": topic}) or 0.0


def test_replies_go_to_their_request_and_bad_or_late_ones_are_counted(deployment, bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    topics = Topics(deployment.topic_prefix)
    search, llm = topics.search_replies, topics.llm_replies
    client = RequestReplyClient(bootstrap, {search: SearchReply, llm: GenerateChunk}, partition=1, instance="t")
    client.start()
    producer = Producer({"bootstrap.servers": bootstrap})

    def send(topic: str, cid: str, value: bytes, schema: str) -> None:
        headers = encode_headers({CORRELATION_ID: cid, "schema": schema})
        producer.produce(topic, value, cid, partition=1, headers=headers)
        producer.flush(10)

    late_before = counter("mmrag_late_replies_total", llm)
    bad_before = counter("mmrag_reply_decode_errors_total", llm)
    try:
        with client.expect("gen-1") as chunks, client.expect("search-1") as shards:
            send(llm, "gen-1", b"\xff\xff not a chunk", "mmrag.v1.GenerateChunk")  # undecodable
            send(llm, "gen-1", SearchReply(shard=3).SerializeToString(), "mmrag.v1.SearchReply")  # wrong schema
            for seq, text in enumerate(["Crabs ", "live there."]):
                send(llm, "gen-1", GenerateChunk(seq=seq, text=text).SerializeToString(), "mmrag.v1.GenerateChunk")
            send(search, "search-1", SearchReply(shard=1).SerializeToString(), "mmrag.v1.SearchReply")
            deadline = time.monotonic() + 15
            got = [chunks.next(deadline), chunks.next(deadline)]
            assert [(c.seq, c.text) for c in got] == [(0, "Crabs "), (1, "live there.")]  # type: ignore[union-attr]
            shard_reply = shards.next(deadline)
            assert isinstance(shard_reply, SearchReply) and shard_reply.shard == 1
            assert chunks.next(time.monotonic() + 0.5) is None, "nothing else reached this request"
        send(llm, "gen-1", GenerateChunk(seq=2, final=True).SerializeToString(), "mmrag.v1.GenerateChunk")
        deadline = time.monotonic() + 15
        while counter("mmrag_late_replies_total", llm) == late_before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert counter("mmrag_late_replies_total", llm) == late_before + 1
        assert counter("mmrag_reply_decode_errors_total", llm) == bad_before + 2
        alive, detail = client.health()
        assert alive and "2 undecodable replies" in detail and "schema header" in detail
    finally:
        client.close()
