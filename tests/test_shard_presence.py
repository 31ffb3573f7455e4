"""A shard whose consumer group has no member is not waited for: Search answers from the shards that are there at
once, partial with the absent shard listed (it used to wait out the whole deadline on every query), and waits for
the shard again once a worker joins its group."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest

from local_stack.stack import start_services
from mmrag.pb import query_pb2, query_pb2_grpc
from tests.kafka_tools import wait_for

pytestmark = pytest.mark.kafka
DEADLINE_S = 8.0
CACHE_TTL_S = 1.0


def timed_search(port: int) -> tuple[query_pb2.SearchResponse, float]:
    start = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        reply = stub.Search(query_pb2.SearchQuery(text="tide pools", top_k=5), timeout=30)
    return reply, time.monotonic() - start


def test_a_shard_without_a_worker_is_missing_at_once_not_at_the_deadline(deployment: Any) -> None:
    query = deployment.service(
        "query_service", MMRAG_SEARCH_TIMEOUT_S=str(DEADLINE_S), MMRAG_RESULT_CACHE_TTL_S=str(CACHE_TTL_S)
    )
    shard0 = deployment.service("retrieval_worker", "0", MMRAG_SHARD="0")
    start_services([query, shard0])
    answered = wait_for(
        lambda: (r := timed_search(deployment.grpc_port))[1] < DEADLINE_S / 2 and r, 60, "an answer without shard 1"
    )
    reply, took = answered
    assert reply.partial and list(reply.missing_shards) == [1], reply
    print(f"answered without the absent shard in {took:.2f}s (deadline {DEADLINE_S}s)")

    (shard1,) = start_services([deployment.service("retrieval_worker", "1", MMRAG_SHARD="1")])
    whole = wait_for(lambda: not (r := timed_search(deployment.grpc_port))[0].partial and r, 120, "both shards")
    assert list(whole[0].missing_shards) == [] and not whole[0].from_cache

    # the complete answer is kept; with shard 1 gone, past the TTL, it is given again flagged as what it is: a cached
    # answer, and partial with the shard that did not answer now (before: partial=false, a dead shard hidden)
    shard1.stop()
    time.sleep(CACHE_TTL_S * 1.5)
    cached, took = wait_for(
        lambda: (r := timed_search(deployment.grpc_port))[0].partial and r, 60, "a reply without shard 1"
    )
    assert cached.from_cache and list(cached.missing_shards) == [1], cached
    assert took < DEADLINE_S / 2, f"waited {took:.2f}s for a shard known absent"
    print(f"cache-served reply without shard 1 in {took:.2f}s: partial, missing {list(cached.missing_shards)}")
