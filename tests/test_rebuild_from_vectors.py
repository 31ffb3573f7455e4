"""Rebuild after loss on the real broker and milvus-lite: an updater writing Milvus and vectors.v1 indexes a corpus,
the collection is dropped, `mmrag reindex --rebuild-from vectors` rebuilds it from the compacted log (no model
runs): same ids, bit-for-bit the same fp32 vectors, the same search results; a space's topics carry its name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from local_stack.services import Service
from mmrag.messages import now_ms
from mmrag.milvus_index import MilvusIndex, alias_target, milvus_client
from mmrag.pb.events_pb2 import Chunk, EmbeddingBatch, IndexState, IndexStatus, Modality
from mmrag.settings import BaseServiceSettings, SpaceSettings
from mmrag.space import EmbeddingSpace, space_from_settings
from mmrag.space_catalog import collection_spec
from mmrag.topics import Topics, ensure_topics
from operator_cli.main import main as mmrag
from tests.kafka_tools import read_topic, wait_for

SHARDS = 2


@pytest.mark.unit
def test_a_space_names_its_groups_and_the_topics_it_produces() -> None:
    live, space_b = BaseServiceSettings(topic_prefix="p."), BaseServiceSettings(topic_prefix="p.", space_name="b")
    assert (live.consumer_group("index-updater"), space_b.consumer_group("index-updater")) == (
        "p.index-updater",
        "p.index-updater.b",
    )
    assert [space_b.topics.embeddings, space_b.topics.vectors, space_b.topics.index_status] == [
        "p.embeddings.b.v1",
        "p.vectors.b.v1",
        "p.index-status.b.v1",
    ]
    assert (
        (space_b.topics.objects, space_b.topics.dlq)
        == (live.topics.objects, live.topics.dlq)
        == (
            "p.objects.v1",
            "p.dlq.v1",
        )
    )
    with pytest.raises(ValueError):
        BaseServiceSettings(space_name="no spaces or-dashes")


def text_batch(space: EmbeddingSpace, oid: str, at_ms: int, rng: np.random.Generator, chunks: int) -> EmbeddingBatch:
    return EmbeddingBatch(
        object_id=oid,
        version="v1",
        modality=Modality.MODALITY_TEXT,
        model_id=space.text_model_id,
        dim=space.text_dim,
        chunks=[
            Chunk(index=i, text=f"{oid} chunk {i}", vector=rng.standard_normal(space.text_dim).tolist())
            for i in range(chunks)
        ],
        event_time_ms=at_ms,
    )


def states(bootstrap: str, topics: Topics) -> dict[str, int]:
    found = {}
    for m in read_topic(bootstrap, topics.index_status, idle_s=1.0):
        status = IndexStatus()
        status.ParseFromString(m.value or b"")
        found[m.key or ""] = status.state
    return found


@pytest.mark.kafka
def test_rebuild_from_vectors_serves_the_same_results(  # type: ignore[no-untyped-def]
    infra, clip_dir: Path, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap, prefix = infra.bootstrap_servers, f"r{unique}"
    topics = Topics(f"{prefix}.")
    ensure_topics(bootstrap, topics, vector_shards=SHARDS)
    env = {
        "MMRAG_BOOTSTRAP_SERVERS": bootstrap,
        "MMRAG_TOPIC_PREFIX": topics.prefix,
        "MMRAG_CLIP_MODEL_DIR": str(clip_dir),
        "MMRAG_SHARDS": str(SHARDS),
        "MMRAG_STATE_DIR": str(tmp_path / "state"),
        "MMRAG_MILVUS_URI": infra.milvus_uri,
        "MMRAG_COLLECTION_PREFIX": prefix,
        "MMRAG_INDEX_BACKEND": "both",
    }
    space = space_from_settings(SpaceSettings(clip_model_dir=clip_dir))
    rng = np.random.default_rng(7)
    oids = [f"rb/doc-{i}.txt" for i in range(6)]
    producer = Producer({"bootstrap.servers": bootstrap})
    for i, oid in enumerate(oids):
        producer.produce(topics.embeddings, text_batch(space, oid, now_ms() + i, rng, 3).SerializeToString(), oid)
    delete = EmbeddingBatch(object_id=oids[5], deleted=True, event_time_ms=now_ms() + 100)
    producer.produce(topics.embeddings, delete.SerializeToString(), oids[5])
    producer.flush(10)
    updater = Service("index-updater", "index_updater", env, tmp_path / "logs")
    try:
        updater.start().wait_ready(120)
        wanted = {**dict.fromkeys(oids[:5], IndexState.INDEX_STATE_INDEXED), oids[5]: IndexState.INDEX_STATE_DELETED}
        wait_for(
            lambda: states(bootstrap, topics) == wanted, 90, f"the corpus indexed and the delete applied: {wanted}"
        )
    finally:
        updater.stop()

    collection = f"{prefix}_{space.id}"
    before = MilvusIndex(infra.milvus_uri, collection, space.dim)
    before.start()
    rows = {r.vector_id: r for oid in oids for r in before.rows_of(oid)}
    queries = [rng.standard_normal(space.dim).astype(np.float32) for _ in range(3)]
    results = [[(h.row.vector_id, h.score) for h in before.search(q, 10)] for q in queries]
    assert len(rows) == 15 and {r.object_id for r in rows.values()} == set(oids[:5])

    client = milvus_client(infra.milvus_uri)
    client.drop_alias(f"{prefix}_live")
    client.drop_collection(collection)
    assert collection not in client.list_collections()

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert mmrag(["reindex", "--rebuild-from", "vectors"]) == 0
    _, spec = collection_spec(milvus_client(infra.milvus_uri), collection)
    assert spec is not None and (spec.space_id, spec.clip_model_dir) == (space.id, str(clip_dir))  # serving reads it

    after = MilvusIndex(infra.milvus_uri, collection, space.dim)
    after.start()
    rebuilt = {r.vector_id: r for oid in oids for r in after.rows_of(oid)}
    assert set(rebuilt) == set(rows)
    for vid, row in rows.items():
        assert np.asarray(rebuilt[vid].vector, np.float32).tobytes() == np.asarray(row.vector, np.float32).tobytes()
        assert (rebuilt[vid].text, rebuilt[vid].shard, rebuilt[vid].indexed_at_ms) == (
            row.text,
            row.shard,
            row.indexed_at_ms,
        )
    # same rows, same ranking; a score may differ in the last float bits (a fresh segment sums in another order)
    served = [[(h.row.vector_id, h.score) for h in after.search(q, 10)] for q in queries]
    assert [[vid for vid, _ in hits] for hits in served] == [[vid for vid, _ in hits] for hits in results]
    for got, want in zip(served, results, strict=True):
        assert [score for _, score in got] == pytest.approx([score for _, score in want], abs=1e-5)
    assert alias_target(client, f"{prefix}_live") == collection
