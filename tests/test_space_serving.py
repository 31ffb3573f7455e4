"""Serving follows the live alias, one space per query (no broker needed: plain logic over the handler and the
query side's space holder; the real path is tests/test_reindex_serving.py):
- a retrieval worker answers each request from the index of the space it names (its own or another one opened on
  first use, at most two kept), and refuses a space it cannot open, naming it;
- the query service serves the space the alias names once its encoder is built, keeps the previous one when the
  new one cannot be served (reason in readiness), and reads the space of a collection without a spec from its name;
- a shard reply from another space than the query's is an error, never merged;
- a space spec survives JSON and rebuilds the same space id from its settings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from consumers.retrieval_worker.handler import RetrievalWorker, RetrievalWorkerSettings
from consumers.retrieval_worker.spaces import ShardSpace
from mmrag.errors import PermanentError
from mmrag.faiss_index import FaissIndex, FaissSettings
from mmrag.messages import Envelope, now_ms
from mmrag.pb.events_pb2 import SearchReply, SearchRequest
from mmrag.request_reply import ReplyAddress
from mmrag.settings import SpaceSettings
from mmrag.space import space_from_settings
from mmrag.space_catalog import SpaceSpec, parse_collection
from mmrag.vector_index import VectorRow
from query_service.search import ShardedSearch
from query_service.spaces import LiveSpaces, ServingSpace

pytestmark = pytest.mark.unit


def faiss_with(vector_id: str, dim: int) -> FaissIndex:
    index = FaissIndex(dim, FaissSettings(faiss_gpu="off"))
    index.upsert([VectorRow(vector_id, f"b/{vector_id}", "v1", 0, 0, np.ones(dim, np.float32), "t", has_text=True)])
    return index


def ask(worker: RetrievalWorker, space_id: str, space_name: str = "", dim: int = 4) -> SearchReply:
    address = ReplyAddress("c1", "replies", 0, now_ms() + 60_000)
    request = SearchRequest(
        correlation_id="c1", space_id=space_id, space_name=space_name, query_vector=np.ones(dim).tolist(), top_k=5
    )
    (result,) = worker.handle([Envelope("c1", request, address.headers(), "requests", 0, 0, 0)])
    assert not isinstance(result, Exception)
    (output,) = result
    assert isinstance(output.value, SearchReply)
    return output.value


def test_a_worker_answers_from_the_space_each_request_names() -> None:
    opened: list[tuple[str, str]] = []
    closed: list[str] = []

    class Closing(FaissIndex):
        def close(self) -> None:
            closed.append(f"{self.dim}")

    def opener(space_id: str, space_name: str) -> ShardSpace:
        if space_id == "gone":
            raise PermanentError("milvus", f"mmrag_{space_id}", "no such collection", "start or rebuild its space")
        opened.append((space_id, space_name))
        index = Closing(8 if space_name == "b" else 4, FaissSettings(faiss_gpu="off"))
        dim = index.dim
        index.upsert(
            [VectorRow(f"{space_name}-{space_id}", "b/x", "v1", 0, 0, np.ones(dim, np.float32), "t", has_text=True)]
        )
        return ShardSpace(space_id, space_name, index)

    settings = RetrievalWorkerSettings(shard=0, keyword_refresh_s=0)
    worker = RetrievalWorker(settings, "aaaa", faiss_with("home", 4), opener)
    worker.warm_up()
    home = ask(worker, "aaaa")
    assert [h.vector_id for h in home.hits] == ["home"] and (home.space_id, home.space_name) == ("aaaa", "")
    other = ask(worker, "bbbb", "b", dim=8)
    assert [h.vector_id for h in other.hits] == ["b-bbbb"] and (other.space_id, other.space_name) == ("bbbb", "b")
    assert [h.vector_id for h in ask(worker, "bbbb", "b", dim=8).hits] == ["b-bbbb"]
    assert opened == [("bbbb", "b")]  # opened once, kept
    wrong_dim = ask(worker, "bbbb", "b", dim=4)  # a vector of another space's layout: refused, nothing compared
    assert "dims" in wrong_dim.error and not wrong_dim.hits
    gone = ask(worker, "gone", "x")
    assert "space gone/x cannot be searched" in gone.error and "no such collection" in gone.error
    ask(worker, "cccc", "c")
    ask(worker, "dddd", "d")  # a third other space: the least recently used one (b) is let go
    assert closed == ["8"] and [h.vector_id for h in ask(worker, "aaaa").hits] == ["home"]


def test_a_worker_without_an_opener_refuses_other_spaces_by_name() -> None:
    worker = RetrievalWorker(RetrievalWorkerSettings(shard=0, keyword_refresh_s=0), "aaaa", faiss_with("home", 4))
    worker.warm_up()
    refused = ask(worker, "bbbb", "b")
    assert "query built for space bbbb/b" in refused.error and "serves only aaaa" in refused.error


def spec(space_id: str, name: str = "") -> SpaceSpec:
    collection = f"mmrag_{space_id}" + (f"_{name}" if name else "")
    return SpaceSpec(space_id, name, collection, f"/models/{space_id}", "fp32", 0.8, 0.6, False)


class FakeAlias:
    def __init__(self) -> None:
        self.target: tuple[str, SpaceSpec | None] | None = None

    def __call__(self) -> tuple[str, SpaceSpec | None] | None:
        return self.target


def test_queries_follow_the_alias_once_the_new_space_is_built() -> None:
    built: list[str] = []

    def build(s: SpaceSpec) -> ServingSpace:
        if s.clip_model_dir == "/models/broken":
            raise ValueError(f"space {s.label}: cannot read its CLIP")
        built.append(s.collection)
        search = ShardedSearch(None, s.space_id, 2, space_name=s.space_name)  # type: ignore[arg-type]
        return ServingSpace(s, None, search)  # type: ignore[arg-type]

    alias = FakeAlias()
    configured = spec("aaaaaaaaaa")
    spaces = LiveSpaces(configured, build, alias, "mmrag", refresh_s=0)
    spaces.start()  # the alias points nowhere: the configured space serves
    assert spaces.current().spec == configured
    b = spec("bbbbbbbbbb", "b")
    alias.target = ("mmrag_bbbbbbbbbb_b", b)
    spaces.refresh()
    assert spaces.current().spec == b and spaces.current().search.space_name == "b"
    alias.target = ("mmrag_aaaaaaaaaa", None)  # a collection made before specs were kept: read from its name
    spaces.refresh()
    assert spaces.current().spec.collection == "mmrag_aaaaaaaaaa" and built == [configured.collection, b.collection]
    alias.target = ("mmrag_cccccccccc_c", replace(spec("cccccccccc", "c"), clip_model_dir="/models/broken"))
    spaces.refresh()  # cannot be served here: the previous space keeps answering, the reason is shown
    assert spaces.current().spec == configured
    ok, detail = spaces.health()
    assert ok and "cannot read its CLIP" in detail and "serving space aaaaaaaaaa" in detail
    alias.target = ("mmrag_dddddddddd", None)  # no spec, not this service's space
    spaces.refresh()
    assert spaces.current().spec == configured and "keeps no space spec" in spaces.problem
    alias.target = ("mmrag_bbbbbbbbbb_b", b)
    spaces.refresh()  # kept loaded (the two most recent): no new build
    assert spaces.current().spec == b and built == [configured.collection, b.collection] and not spaces.problem


def test_a_reply_from_another_space_is_an_error_not_hits() -> None:
    search = ShardedSearch(None, "aaaa", 2, space_name="b")  # type: ignore[arg-type]
    same = search._same_space(SearchReply(shard=0, space_id="aaaa", space_name="b"))
    assert not same.error
    mixed = search._same_space(SearchReply(shard=1, space_id="aaaa", space_name=""))
    assert "mixed spaces refused" in mixed.error


def test_a_space_spec_round_trips_and_rebuilds_its_space(clip_dir: Path) -> None:
    settings = SpaceSettings(clip_model_dir=clip_dir, torch_threads=1)
    space = space_from_settings(settings)
    kept = SpaceSpec.of(settings, space, "b", f"mmrag_{space.id}_b")
    again = SpaceSpec.from_json(kept.to_json())
    assert again == kept and again.label == f"{space.id}/b"
    assert again.check(SpaceSettings(clip_model_dir=Path("/elsewhere"), torch_threads=2)).id == space.id
    other = replace(kept, precision="bf16")
    with pytest.raises(ValueError, match="give this host the same model files"):
        other.check(settings)
    assert parse_collection("mmrag", f"mmrag_{space.id}_my_space") == (space.id, "my_space")
    assert parse_collection("mmrag", "mmrag_live") is None and parse_collection("other", f"mmrag_{space.id}") is None


def test_a_space_whose_shards_cannot_answer_yet_is_not_switched_to() -> None:
    def build(s: SpaceSpec) -> ServingSpace:
        return ServingSpace(s, None, ShardedSearch(None, s.space_id, 2, space_name=s.space_name))  # type: ignore[arg-type]

    ready: set[str] = set()

    def probe(serving: ServingSpace) -> None:
        if serving.spec.space_id not in ready:
            raise ValueError(f"space {serving.spec.label}: shards [1] did not answer a probe from it")

    alias = FakeAlias()
    spaces = LiveSpaces(spec("aaaaaaaaaa"), build, alias, "mmrag", refresh_s=0, probe=probe)
    spaces.start()  # the first space is not probed (the workers may start after the query service)
    alias.target = ("mmrag_bbbbbbbbbb_b", spec("bbbbbbbbbb", "b"))
    spaces.refresh()
    assert spaces.current().spec.space_id == "aaaaaaaaaa" and "did not answer a probe" in spaces.problem
    ready.add("bbbbbbbbbb")
    spaces._failed.clear()  # instead of waiting RETRY_FAILED_S
    spaces.refresh()
    assert spaces.current().spec.space_id == "bbbbbbbbbb" and not spaces.problem
