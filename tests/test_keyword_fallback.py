"""The keyword fallback on the real stack: with its Milvus stopped, Search still answers from the retrieval workers'
keyword (BM25) side indexes, flagged degraded=keyword, exact identifiers included; once Milvus is back, answers are
whole again. The Milvus here is a private milvus-lite (the session's keeps serving other tests)."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from local_stack.processes import free_port
from mmrag.object_store import S3ObjectStore
from mmrag.pb import query_pb2, query_pb2_grpc
from tests.kafka_tools import wait_for

pytestmark = pytest.mark.kafka

DOCS = {
    "docs/solar.md": "Solar inverter fault F-2307 means grid overvoltage on long feeder lines on sunny afternoons.",
    "docs/kafka.md": "Kafka consumer groups split the partitions of a topic between their members.",
    "docs/bread.md": "A sourdough starter with a layer of hooch on top is hungry: feed it more often.",
}


def side_chunks(service: Any) -> float:
    """The chunks in a retrieval worker's keyword side index (Milvus answers keywords itself while it is up)."""
    with urllib.request.urlopen(service.probe_url + "/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("mmrag_keyword_side_index_chunks{"):
                return float(line.split()[-1])
    return 0.0


def search(stub: Any, text: str) -> Any:
    return stub.Search(query_pb2.SearchQuery(text=text, top_k=3), timeout=20)


def test_milvus_stopped_keyword_indexes_answer_flagged(deployment: Any, tmp_path: Path) -> None:
    from local_stack.milvus import start_milvus_lite, stop_milvus_lite
    from local_stack.stack import start_services

    milvus_dir, port = tmp_path / "milvus-private", free_port()
    uri = start_milvus_lite(milvus_dir, port)
    extra = {"MMRAG_MILVUS_URI": uri, "MMRAG_KEYWORD_REFRESH_S": "1"}
    names = ["sqs_bridge", "normalizer", "text_embedder", "index_updater", "query_service"]
    services = [deployment.service(n, **extra) for n in names]
    services += [
        deployment.service("retrieval_worker", str(k), MMRAG_SHARD=str(k), **extra) for k in range(deployment.shards)
    ]
    try:
        start_services(services)
        store = S3ObjectStore(deployment.s3_settings(), "test")
        for key, text in DOCS.items():
            store.put(deployment.bucket, key, text.encode(), "text/markdown")
        stub = query_pb2_grpc.QueryServiceStub(grpc.insecure_channel(f"127.0.0.1:{deployment.grpc_port}"))
        every = {f"{deployment.bucket}/{k}" for k in DOCS}

        def found(text: str) -> set[str]:
            reply = search(stub, text)
            return set() if reply.partial or reply.degraded else {r.object_id for r in reply.results}

        wait_for(lambda: found("kafka consumer groups") == every, 180, "every document searchable")
        solar = f"{deployment.bucket}/docs/solar.md"
        workers = [s for s in services if s.name.startswith("retrieval_worker")]
        wait_for(lambda: sum(side_chunks(w) for w in workers) == len(DOCS), 30, "the side indexes built")
        stop_milvus_lite(milvus_dir)

        reply = wait_for(lambda: (r := search(stub, "inverter fault F-2307")).degraded and r, 60, "a degraded answer")
        assert reply.degraded == "keyword" and not reply.partial and not reply.from_cache
        assert reply.results[0].object_id == solar and "F-2307" in reply.results[0].text
        hooch = search(stub, "hooch")
        assert hooch.degraded == "keyword" and [r.object_id for r in hooch.results][:1] == [
            f"{deployment.bucket}/docs/bread.md"
        ]

        start_milvus_lite(milvus_dir, port)  # the same data and port: the adapters reconnect and reload
        wait_for(
            lambda: found("sourdough starter feeding") >= {f"{deployment.bucket}/docs/bread.md"}, 120, "whole again"
        )
    finally:
        stop_milvus_lite(milvus_dir)
