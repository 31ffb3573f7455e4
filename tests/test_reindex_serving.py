"""Re-index with another model while queries run, on the real stack (Kafka, local S3, milvus-lite, the embedders,
updaters, two retrieval workers and the query service as processes): a corpus indexed by space A (test CLIP A) is
re-indexed by `mmrag reindex --space b` with CLIP B while a thread searches through the real gRPC Search without
pause; the swap moves the answers to space B and the rollback back to A. Every query succeeds (complete, and its
chunks are exactly the rows of the one space its response names: no query mixes spaces), the vector ids of space B
are exactly the expected set, and answers after the swap carry space B. Space B is a second CLIP on torch, or the
same models on ONNX Runtime int8 (`--encoder-backend onnx`): a deployment moved from torch to ORT with Search
answering throughout, its queries encoded by ORT once swapped (the query service builds B's encoders from its
spec)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from mmrag.clip import write_random_clip
from mmrag.errors import RetryableError
from mmrag.ids import vector_id
from mmrag.milvus_index import MilvusIndex
from mmrag.pb import query_pb2, query_pb2_grpc
from mmrag.settings import SpaceSettings
from mmrag.space import space_from_settings
from mmrag.vector_index import VectorRow
from operator_cli.reindex import caught_up, progress, rollback, start_space, stop_space, swap_to
from tests.kafka_tools import wait_for
from tests.test_reindex import live_caught_up, upload_corpus

pytestmark = pytest.mark.kafka
QUERY = "how is a topic split into ordered logs"


def rows_in(uri: str, collection: str, oids: list[str]) -> dict[str, VectorRow]:
    """The rows of ``oids`` in ``collection`` by vector id ({} while it is missing or Milvus does not answer);
    a channel per call, closed: idle channels of a loaded milvus-lite get GOAWAY (too_many_pings)."""
    index = MilvusIndex(uri, collection, 0, create=False)
    try:
        index.start()
        return {r.vector_id: r for oid in oids for r in index.rows_of(oid)}
    except RetryableError:
        return {}
    finally:
        index.close()


@dataclass
class Queries:
    """Searches without pause in a thread; every answer is checked against the rows of the space it names."""

    port: int
    expected: dict[tuple[str, str], set[str]]  # (space id, space name) -> its vector ids
    answers: list[tuple[str, str]] = field(default_factory=list)  # (space id, space name) per answer, in order
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        stub = query_pb2_grpc.QueryServiceStub(grpc.insecure_channel(f"127.0.0.1:{self.port}"))
        while not self.stop.is_set():
            try:
                reply = stub.Search(query_pb2.SearchQuery(text=QUERY, top_k=10, raw_chunks=True), timeout=15)
            except grpc.RpcError as exc:
                self.failures.append(f"{exc.code().name}: {exc.details()}")
                continue
            self.check(reply)
            time.sleep(0.05)

    def check(self, reply: Any) -> None:
        space = (reply.space_id, reply.space_name)
        ids = {r.vector_id for r in reply.results}
        if reply.partial or space not in self.expected or ids != self.expected[space]:
            self.failures.append(f"space {space}, partial {reply.partial} {list(reply.missing_shards)}, ids {ids}")
        else:
            self.answers.append(space)

    def count(self, space: tuple[str, str]) -> int:
        return sum(1 for s in self.answers if s == space)

    def wait_answers(self, space: tuple[str, str], more: int, timeout_s: float) -> None:
        """Until the last answers came from ``space`` and ``more`` of them after the first one that did."""
        start = len(self.answers)

        def served() -> bool:
            recent = self.answers[start:]
            first = next((i for i, s in enumerate(recent) if s == space), None)
            return first is not None and recent[-1] == space and len(recent) - first >= more

        wait_for(served, timeout_s, f"queries answered by space {space}")


# the ORT move is marked slow: ~4 min on 2 cores beside the clip-b run the default suite already pays
@pytest.mark.parametrize("target", ["clip-b", pytest.param("onnx-int8", marks=pytest.mark.slow)])
def test_queries_never_fail_through_reindex_swap_and_rollback(
    deployment, clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """Space B is another CLIP on torch, or the same models on ONNX Runtime int8 (a torch -> ORT move)."""
    from local_stack.stack import start_services

    env = deployment.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    live = [deployment.service(n) for n in ("sqs_bridge", "normalizer", "text_embedder", "vision_embedder")]
    live.append(deployment.service("index_updater"))
    serving = [deployment.service("query_service", MMRAG_RESULT_CACHE_TTL_S="0"), *deployment.shard_workers()]
    start_services(live + serving)
    oids = upload_corpus(deployment, tmp_path)
    space_a = space_from_settings(SpaceSettings(clip_model_dir=clip_dir))
    uri, prefix = env["MMRAG_MILVUS_URI"], env["MMRAG_COLLECTION_PREFIX"]
    collection_a = f"{prefix}_{space_a.id}"

    def live_indexed() -> bool:
        return {r.object_id for r in rows_in(uri, collection_a, oids).values()} == set(oids) and live_caught_up()

    wait_for(live_indexed, 240, "the corpus indexed by the live space")
    for service in live[2:]:
        service.stop()  # 2 cores: the live space now only serves (query service, workers, Milvus)
    rows_a = wait_for(lambda: rows_in(uri, collection_a, oids), 30, "the rows of space A")
    if target == "clip-b":
        clip_b = write_random_clip(tmp_path / "clip-b", seed=1)
        settings_b, overrides = SpaceSettings(clip_model_dir=clip_b), {"MMRAG_CLIP_MODEL_DIR": str(clip_b)}
    else:
        settings_b = SpaceSettings(clip_model_dir=clip_dir, encoder_backend="onnx")  # int8 unless told
        overrides = {"MMRAG_ENCODER_BACKEND": "onnx"}
    space_b = space_from_settings(settings_b)
    assert space_b.id != space_a.id
    expected_b = {vector_id(r.object_id, r.version, f"chunk-{r.chunk_index}", space_b.id) for r in rows_a.values()}
    a, b = (space_a.id, ""), (space_b.id, "b")
    queries = Queries(deployment.grpc_port, {a: set(rows_a), b: expected_b})
    thread = threading.Thread(target=queries.run, name="queries", daemon=True)
    thread.start()
    try:
        queries.wait_answers(a, 3, 60)
        try:
            start_space("b", overrides)
            wait_for(lambda: caught_up(progress("b")), 420, "space b caught up")
        finally:
            stop_space("b")
        rows_b = wait_for(lambda: rows_in(uri, f"{prefix}_{space_b.id}_b", oids), 30, "the rows of space B")
        assert set(rows_b) == expected_b
        during = queries.count(a)
        assert swap_to("b") == f"{prefix}_{space_b.id}_b"
        queries.wait_answers(b, 15, 120)
        assert rollback() == collection_a
        queries.wait_answers(a, 15, 120)
    finally:
        queries.stop.set()
        thread.join(30)
    assert queries.failures == []
    assert during > 3 and queries.count(b) >= 15  # answered by A through the whole re-index, then by B
    first_b = queries.answers.index(b)
    last_b = len(queries.answers) - 1 - queries.answers[::-1].index(b)
    assert set(queries.answers[first_b : last_b + 1]) == {b}  # once swapped, B alone until the rollback
