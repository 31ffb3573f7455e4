"""Document readers from the object store, unit by unit: the normalizer reads an object's mmrag-readers tag with
its metadata and announces a tag change (or the same bytes uploaded with new tags) as a readers-only record, once;
the updater turns a readers-only batch into the same rows with new readers (nothing embedded again); a caller's
scope carries its reader tokens (none: nothing; unrestricted: no condition)."""

from __future__ import annotations

import json
from urllib.parse import quote_plus

import numpy as np
import pytest

from index_updater.fusion import plan_update
from mmrag.changelog import LoggedRecord
from mmrag.messages import Envelope, Output
from mmrag.pb.events_pb2 import EmbeddingBatch, IndexState, Modality, ObjectEvent, SearchRequest
from mmrag.pb.query_pb2 import Filter
from mmrag.space import EmbeddingSpace
from mmrag.vector_index import SearchFilter, VectorRow, reader_tokens
from producers.normalizer import Normalizer, NormalizerSettings, decode_changes
from query_service.callers import ANONYMOUS, NO_CALLER, Caller
from query_service.filters import scope_of
from tests.test_version_identity import BUCKET, KEY, OID, T0, MemoryChangelog, iso

pytestmark = pytest.mark.unit


class TaggedStore:
    """Plain text objects whose tags the test sets."""

    def __init__(self) -> None:
        self.tags_now: dict[str, str] = {}

    def read_prefix(self, bucket: str, key: str, length: int, version_id: str = "") -> bytes:
        return b"Kafka consumer groups share partitions.\n"

    def tags(self, bucket: str, key: str) -> dict[str, str]:
        return dict(self.tags_now)


def body(name: str, t_ms: int, etag: str = "e1") -> bytes:
    obj = {"key": quote_plus(KEY), "size": 41, "eTag": etag}
    return json.dumps(
        {"Records": [{"eventName": name, "eventTime": iso(t_ms), "s3": {"bucket": {"name": BUCKET}, "object": obj}}]}
    ).encode()  # noqa: E501


class Feed:
    def __init__(self, store: TaggedStore, records: list[LoggedRecord] | None = None, **settings: object) -> None:
        self.normalizer = Normalizer(NormalizerSettings(**settings), store, MemoryChangelog(records or []))
        self.normalizer.warm_up()
        self.normalizer.on_assign([(self.normalizer.topics.s3_events, 0)])
        self.offset = 0
        self.emitted: list[Output] = []

    def send(self, name: str, t_ms: int, etag: str = "e1") -> list[Output]:
        headers = {"source": "sqs"}
        env = Envelope(OID, decode_changes(body(name, t_ms, etag), headers), headers, "s3-events.v1", 0, self.offset, 0)
        self.offset += 1
        [result] = self.normalizer.handle([env])
        assert isinstance(result, list), result
        self.normalizer.on_commit()
        self.emitted += result
        return [o for o in result if o.topic == self.normalizer.topics.objects]

    def changelog(self) -> list[LoggedRecord]:
        records = [o for o in self.emitted if o.topic == self.normalizer.topics.objects]
        return [LoggedRecord(0, n, o.key, b"event", dict(o.headers)) for n, o in enumerate(records)]


def event(out: Output) -> ObjectEvent:
    assert isinstance(out.value, ObjectEvent)
    return out.value


def test_readers_come_from_the_tag_and_a_tag_change_is_one_readers_only_record() -> None:
    store = TaggedStore()
    store.tags_now = {"mmrag-readers": "group:finance user:alice"}
    feed = Feed(store)
    [created] = feed.send("ObjectCreated:Put", T0)
    assert list(event(created).readers) == ["group:finance", "user:alice"] and not event(created).readers_only
    assert created.headers["readers"] == "group:finance user:alice"
    assert feed.send("ObjectTagging:Put", T0 + 5) == []  # the same readers: nothing to announce
    store.tags_now = {"mmrag-readers": "group:eng"}
    [changed] = feed.send("ObjectTagging:Put", T0 + 10)
    assert (changed.key, changed.partition, changed.headers["object-id"]) == (f"#readers/{OID}", 0, OID)
    assert event(changed).readers_only and list(event(changed).readers) == ["group:eng"]
    assert event(changed).version == event(created).version == changed.headers["version"]
    store.tags_now = {"mmrag-readers": "group:ops"}
    [again] = feed.send("ObjectCreated:Put", T0 + 20)  # the same bytes uploaded again, with new tags
    assert event(again).readers_only and list(event(again).readers) == ["group:ops"]
    assert feed.send("ObjectCreated:CompleteMultipartUpload", T0 + 21) == []  # its twin: readers unchanged

    restarted = Feed(store, feed.changelog())  # the table restored from objects.v1 keeps the readers
    assert restarted.send("ObjectCreated:Put", T0 + 30) == []
    store.tags_now = {}
    [untagged] = restarted.send("ObjectTagging:Delete", T0 + 40)
    assert event(untagged).readers_only and list(event(untagged).readers) == []  # default readers: nobody


def test_untagged_objects_get_the_default_readers_and_a_bad_tag_is_refused() -> None:
    store = TaggedStore()
    [created] = Feed(store, default_readers="group:staff").send("ObjectCreated:Put", T0)
    assert list(event(created).readers) == ["group:staff"]
    store.tags_now = {"mmrag-readers": "finance"}
    feed = Feed(store)
    [tombstone] = feed.send("ObjectCreated:Put", T0)
    assert tombstone.value is None and "bad mmrag-readers tag" in tombstone.headers["rejected"]
    [dead] = [o for o in feed.emitted if o.topic == feed.normalizer.topics.dlq]
    assert "group:finance user:alice" in dict(dead.headers)["dlq-fix"]
    with pytest.raises(ValueError, match="neither user"):
        NormalizerSettings(default_readers="everyone")
    assert reader_tokens("user:bob, group:a  group:a") == ("group:a", "user:bob")


def test_a_readers_only_batch_rewrites_the_rows_readers_and_nothing_else(space: EmbeddingSpace) -> None:
    rng = np.random.default_rng(0)
    rows = [
        VectorRow(
            f"v{i}",
            OID,
            "e1",
            i,
            1,
            rng.standard_normal(space.dim).astype(np.float32),
            f"chunk {i}",
            has_text=True,
            readers=("group:finance",),
        )  # fmt: skip
        for i in range(3)
    ]
    batch = EmbeddingBatch(
        object_id=OID, version="e1", modality=Modality.MODALITY_TEXT, readers=["group:eng"], readers_only=True
    )
    plan = plan_update(batch, rows, space, 2, 99)
    assert plan.deletes == [] and [r.vector_id for r in plan.upserts] == ["v0", "v1", "v2"]
    assert all(r.readers == ("group:eng",) for r in plan.upserts)
    for old, new in zip(rows, plan.upserts, strict=True):
        assert new.text == old.text and np.array_equal(new.vector, old.vector)
    assert plan.status.state == IndexState.INDEX_STATE_INDEXED and list(plan.status.readers) == ["group:eng"]
    unchanged = plan_update(batch, plan.upserts, space, 2, 100)
    assert unchanged.status.state == IndexState.INDEX_STATE_SKIPPED and not unchanged.upserts
    nothing_indexed = plan_update(batch, [], space, 2, 100)
    assert nothing_indexed.status.state == IndexState.INDEX_STATE_SKIPPED


def test_the_callers_scope_carries_its_tokens_and_the_shard_filter_admits_by_them() -> None:
    from consumers.retrieval_worker.handler import request_filter

    alice = Caller("alice", frozenset({"finance"}))
    filled = scope_of(Filter(), caller=alice).fill(SearchRequest())
    assert filled.restricted and list(filled.reader_tokens) == ["group:finance", "user:alice"]
    where = request_filter(filled)
    row = VectorRow("v", OID, "e1", 0, 0, np.zeros(2, np.float32), readers=("group:finance",))
    assert where.admits(row) and not where.admits(VectorRow("w", OID, "e1", 0, 0, np.zeros(2), readers=("group:x",)))
    nobody = request_filter(scope_of(Filter(), caller=NO_CALLER).fill(SearchRequest()))
    assert nobody.readers == frozenset() and nobody.matches_nothing
    everyone = request_filter(scope_of(Filter(), caller=ANONYMOUS).fill(SearchRequest()))
    assert everyone.readers is None and everyone.admits(row) and SearchFilter().admits(row)


@pytest.fixture
def space(tmp_path_factory: pytest.TempPathFactory) -> EmbeddingSpace:
    from mmrag.clip import write_random_clip
    from mmrag.settings import SpaceSettings
    from mmrag.space import space_from_settings

    clip = write_random_clip(tmp_path_factory.mktemp("clip"), seed=0)
    return space_from_settings(SpaceSettings(clip_model_dir=clip))


def test_the_query_service_drops_hits_its_newest_status_hides_from_the_caller() -> None:
    """Defense in depth behind the shards' filter: a side keyword index built before a readers change lags it."""
    from mmrag.pb.events_pb2 import IndexStatus, SearchHit, SearchReply
    from query_service.index_changes import IndexedObjects
    from query_service.search import without_hidden

    indexed = IndexedObjects()
    state = IndexState.INDEX_STATE_INDEXED
    indexed.observe(IndexStatus(object_id="b/a", version="1", state=state, indexed_at_ms=1, readers=["group:eng"]))
    indexed.observe(IndexStatus(object_id="b/c", version="1", state=state, indexed_at_ms=1, readers=["group:fin"]))
    reply = SearchReply(shard=0, hits=[SearchHit(object_id=o, vector_id=o) for o in ("b/a", "b/c", "b/unseen")])
    kept = without_hidden(reply, indexed, frozenset({"group:fin", "user:alice"}))
    assert [h.object_id for h in kept.hits] == ["b/c", "b/unseen"] and len(reply.hits) == 3
    assert without_hidden(reply, indexed, frozenset({"group:eng", "group:fin"})) is reply
