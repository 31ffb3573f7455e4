"""The local stack on the Faiss path (MMRAG_INDEX_BACKEND=faiss, `mmrag stack up --index-backend faiss`): the
deployment starts one Faiss worker per shard instead of the Milvus workers; on the real broker an upload through
S3 -> SQS -> Kafka -> embedders -> updater -> vectors.v1 is answered by Search from the Faiss workers (Milvus holds
nothing), and a delete leaves the answers."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest

from local_stack.stack import Deployment, Endpoints
from local_stack.state import StackRecord
from mmrag.ids import shard_for
from mmrag.milvus_index import milvus_client
from mmrag.object_store import S3ObjectStore
from mmrag.topics import Topics
from tests.kafka_tools import read_topic, wait_for
from tests.test_search_on_stack import KAFKA, TIDES, Client

KEYS = ("docs/kafka.md", "docs/tides.txt", "docs/groups.txt")
GROUPS = "Partitions of a topic are shared by the members of a Kafka consumer group; a rebalance moves them."


def workers_of(dep: Deployment) -> list[tuple[str, str, str, str]]:
    return [
        (s.name, s.module, s.env["MMRAG_SHARD"], s.env["MMRAG_INDEX_BACKEND"])
        for s in dep.all_services()
        if "MMRAG_SHARD" in s.env
    ]


def test_the_index_backend_chooses_each_shards_workers(tmp_path: Path) -> None:
    endpoints = Endpoints("127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3")
    dep = Deployment(tmp_path, endpoints, tmp_path / "clip", shards=2)
    assert workers_of(dep) == [  # the default: Faiss shards (milvus-lite searches linearly)
        ("faiss_worker", "consumers.faiss_worker", "0", "faiss"),
        ("faiss_worker-1", "consumers.faiss_worker", "1", "faiss"),
    ]
    dep.index_backend = "milvus"
    assert workers_of(dep) == [
        ("retrieval_worker", "consumers.retrieval_worker", "0", "milvus"),
        ("retrieval_worker-1", "consumers.retrieval_worker", "1", "milvus"),
    ]
    dep.index_backend = "both"  # one of each kind per shard, replicas in the shard's group
    assert [(name, shard) for name, _, shard, _ in workers_of(dep)] == [
        ("retrieval_worker", "0"),
        ("retrieval_worker-1", "1"),
        ("faiss_worker", "0"),
        ("faiss_worker-1", "1"),
    ]
    updater = next(s for s in dep.all_services() if s.name == "index_updater")
    assert updater.env["MMRAG_INDEX_BACKEND"] == "both"
    record = StackRecord(str(tmp_path), dep.env(), dep.bucket, [])
    record.save()
    loaded = StackRecord.load(tmp_path)
    assert loaded is not None and loaded.deployment().index_backend == "both"
    assert loaded.client_env()["MMRAG_INDEX_BACKEND"] == "both"


def readyz(service: Any) -> str:
    with urllib.request.urlopen(service.probe_url + "/readyz", timeout=5) as reply:
        return str(reply.read().decode())


def search_requests_answered(service: Any) -> float:
    with urllib.request.urlopen(service.probe_url + "/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith('mmrag_messages_processed_total{stage="retrieval_worker"}'):
                return float(line.split()[-1])
    return 0.0


@pytest.mark.kafka
def test_upload_then_search_answered_by_faiss_workers_on_the_stack(deployment: Any) -> None:
    from local_stack.stack import start_services

    deployment.index_backend = "faiss"
    names = ["sqs_bridge", "normalizer", "text_embedder", "vision_embedder", "index_updater", "query_service"]
    workers = deployment.shard_workers()
    assert [w.module for w in workers] == ["consumers.faiss_worker"] * deployment.shards
    start_services([deployment.service(n) for n in names] + workers)
    store = S3ObjectStore(deployment.s3_settings(), "test")
    b = deployment.bucket
    for key, text in zip(KEYS, (KAFKA, TIDES, GROUPS), strict=True):
        store.put(b, key, text.encode(), "text/plain")
    every = {f"{b}/{key}" for key in KEYS}
    client = Client(deployment.grpc_port)
    wait_for(lambda: client.found("kafka consumer groups", top_k=10) == every, 240, "every upload searchable")

    answer = client.search("kafka consumer groups share partitions", top_k=10)
    assert {r.object_id for r in answer} == every and len(answer) == len(every)
    assert answer[-1].object_id == f"{b}/docs/tides.txt"  # the unrelated text ranks last
    # (no score order asserted: results come in the fusion's rank order, scores stay joint similarities)

    # Who answered: each Faiss worker holds its shard's rows (from vectors.v1) and answered; Milvus holds nothing.
    vectors = read_topic(deployment.endpoints.bootstrap_servers, Topics(deployment.topic_prefix).vectors, idle_s=1.5)
    assert {m.headers["object-id"] for m in vectors} == every
    assert all(m.partition == shard_for(m.headers["object-id"], deployment.shards) for m in vectors)
    for k, worker in enumerate(workers):
        rows = len({m.key for m in vectors if m.partition == k})
        assert f", {rows} rows, text flat, image flat" in readyz(worker)
        assert search_requests_answered(worker) > 0
    prefix = deployment.env()["MMRAG_COLLECTION_PREFIX"]
    milvus = milvus_client(deployment.endpoints.milvus_uri)
    assert not [c for c in milvus.list_collections() if c.startswith(prefix)]

    # A delete reaches the Faiss workers through vectors.v1 tombstones.
    store.delete(b, "docs/kafka.md")
    gone = every - {f"{b}/docs/kafka.md"}
    wait_for(lambda: client.found("kafka consumer groups", top_k=10) == gone, 120, "the deleted object gone")
