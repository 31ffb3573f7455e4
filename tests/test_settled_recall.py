"""'Indexed' means searchable at full quality: a corpus uploaded in one go and searched the moment every status says
indexed finds what it finds once settled (issue 18: the keyword side rebuilt every 30 s gave recall@5 0.40 at that
moment and 0.96 from +27 s). The real stack: S3 -> SQS -> normalizer -> text embedder lanes -> updater -> shards."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from mmrag.grpc_tls import query_channel
from mmrag.object_store import S3ObjectStore
from mmrag.pb import query_pb2, query_pb2_grpc
from mmrag.pb.events_pb2 import IndexState
from producers.upload import upload_files
from tests.kafka_tools import wait_for
from tests.test_awkward_keys import in_state

# slow (~2 min quiet, 8 min on a loaded box): the default run keeps tests/test_keyword_freshness.py, the same
# contract per document (found by its identifier the moment its status says indexed)
pytestmark = [pytest.mark.kafka, pytest.mark.slow]
CORPUS = Path(__file__).resolve().parents[1] / "bench" / "data" / "mixed_corpus"
SETTLE_S = 35.0  # past the 30 s the keyword side once needed to catch up


def recall_at_5(port: int, bucket: str, questions: list[dict[str, Any]]) -> float:
    """Share of questions with a relevant document among the top 5 objects."""
    found = 0
    with query_channel(f"127.0.0.1:{port}") as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        for q in questions:
            reply = stub.Search(query_pb2.SearchQuery(text=q["query"], top_k=5), timeout=30)
            assert not reply.partial, f"{q['query']!r}: partial, missing shards {list(reply.missing_shards)}"
            hits = {r.object_id for r in reply.results}
            found += any(f"{bucket}/docs/{name}" in hits for name in q["relevant"])
    return found / len(questions)


def test_a_corpus_searched_the_moment_it_is_indexed_has_its_settled_recall(deployment: Any) -> None:
    from local_stack.stack import start_services

    # the result cache off: the second round must search the index again, not repeat the first round's answers
    services = [s for s in deployment.all_services() if s.name != "llm_worker"]
    services = [
        deployment.service("query_service", MMRAG_RESULT_CACHE_TTL_S="0") if s.name == "query_service" else s
        for s in services
    ]
    start_services(services)
    questions = json.loads((CORPUS / "questions.json").read_text())["questions"]
    docs = sorted((CORPUS / "docs").glob("*.md"))
    bucket, port = deployment.bucket, deployment.grpc_port
    status_topic = f"{deployment.topic_prefix}index-status.v1"

    upload_files(S3ObjectStore(deployment.s3_settings(), "test"), bucket, docs, prefix="docs")
    uploaded = time.monotonic()
    wanted = {f"{bucket}/docs/{d.name}" for d in docs}
    bootstrap = deployment.endpoints.bootstrap_servers
    indexed = IndexState.INDEX_STATE_INDEXED
    wait_for(lambda: wanted <= in_state(bootstrap, status_topic, bucket, indexed), 300, f"{len(docs)} indexed")
    indexed_after = time.monotonic() - uploaded
    at_once = recall_at_5(port, bucket, questions)
    time.sleep(SETTLE_S)
    settled = recall_at_5(port, bucket, questions)
    print(
        f"{len(docs)} documents indexed {indexed_after:.1f}s after the upload; {len(questions)} questions: "
        f"recall@5 at once {at_once:.2f}, {SETTLE_S:.0f}s later {settled:.2f}"
    )
    assert at_once == settled, f"recall@5 {at_once:.2f} at 'indexed', {settled:.2f} once settled"
    assert settled >= 0.8, f"recall@5 {settled:.2f}: the retrieval itself regressed (bench.retrieval_eval)"
