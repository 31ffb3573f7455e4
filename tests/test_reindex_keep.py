"""Old spaces on the real broker and milvus-lite: `mmrag status` lists every space with its model and which one is
live or the rollback target; `mmrag reindex --keep N` drops the old spaces beyond the N most recent after a
confirmation (collection, groups, topics of a named space), never the live space or the rollback target; the
progress view's figures as Prometheus gauges."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import REGISTRY, generate_latest
from rich.console import Console

from mmrag.milvus_index import MilvusIndex, alias_target, milvus_client, move_alias
from mmrag.settings import VectorStoreSettings
from mmrag.space_catalog import SpaceSpec, spec_properties
from mmrag.topics import Topics, ensure_topics
from mmrag.vector_index import VectorRow
from operator_cli.connection import OperatorSettings
from operator_cli.reindex import StageProgress, export_progress, keep_spaces
from operator_cli.spaces import spaces, spaces_table, to_drop
from operator_cli.status import space_models
from tests.kafka_tools import wait_for

pytestmark = pytest.mark.kafka
DIM = 4


def make_space(uri: str, prefix: str, space_id: str, name: str, model: str) -> SpaceSpec:
    collection = f"{prefix}_{space_id}" + (f"_{name}" if name else "")
    spec = SpaceSpec(space_id, name, collection, f"/models/{model}", "fp32", 0.8, 0.6, False, "minilm", model, DIM)
    index = MilvusIndex(uri, collection, DIM, properties=spec_properties(spec))
    index.start()
    index.upsert([VectorRow(f"v-{space_id}", "b/x", "v1", 0, 0, np.ones(DIM, np.float32), "x", has_text=True)])
    index.close()
    return spec


def commit_group(bootstrap: str, group: str, topic: str) -> None:
    """Commits offset 0 of ``topic`` for ``group`` (retried while a new broker's group coordinator loads)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        wait_for(lambda: _committed(consumer, topic), 60, f"an offset committed for {group}")
    finally:
        consumer.close()


def _committed(consumer: Consumer, topic: str) -> bool:
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    except KafkaException:
        return False
    return True


def test_status_lists_spaces_and_keep_drops_only_old_ones(deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    env = deployment.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    uri, prefix, bootstrap = env["MMRAG_MILVUS_URI"], env["MMRAG_COLLECTION_PREFIX"], env["MMRAG_BOOTSTRAP_SERVERS"]
    a = make_space(uri, prefix, "aaaaaaaaaa", "", "clip-a")
    b = make_space(uri, prefix, "bbbbbbbbbb", "b", "clip-b")
    c = make_space(uri, prefix, "cccccccccc", "c", "clip-c")
    d = make_space(uri, prefix, "dddddddddd", "d", "clip-d")  # built, never served: kept first
    topics_c = Topics(env["MMRAG_TOPIC_PREFIX"], "c")
    ensure_topics(bootstrap, topics_c, vector_shards=2)
    groups_c = [env["MMRAG_TOPIC_PREFIX"] + g for g in ("embedder-text.c", "index-updater.c")]
    commit_group(bootstrap, groups_c[0], topics_c.objects)
    commit_group(bootstrap, groups_c[1], topics_c.embeddings)
    # history: c served, then b, then a (live now; the rollback would go back to b)
    swaps = [
        {"alias": f"{prefix}_live", "from": c.collection, "to": b.collection, "at_ms": 1000},
        {"alias": f"{prefix}_live", "from": b.collection, "to": a.collection, "at_ms": 2000},
    ]
    path = Path(env["MMRAG_STATE_DIR"]) / "reindex" / "swaps.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(swaps))
    client = milvus_client(uri)
    move_alias(client, f"{prefix}_live", a.collection)

    rows = spaces(client, VectorStoreSettings(), swaps)
    assert [(r.label, r.model, r.rows, r.live, r.rollback) for r in rows] == [
        (a.space_id, "clip-a", 1, True, False),
        (f"{b.space_id}/b", "clip-b", 1, False, True),
        (f"{c.space_id}/c", "clip-c", 1, False, False),
        (f"{d.space_id}/d", "clip-d", 1, False, False),
    ]
    assert [r.label for r in to_drop(rows, 0)] == [f"{d.space_id}/d", f"{c.space_id}/c"]
    assert space_models()[a.space_id] == "clip-a (live)"  # what `mmrag status OBJECT` shows for the object's space
    shown = Console(record=True, width=250)
    shown.print(spaces_table(rows, f"{prefix}_live"))
    lines = {
        model: line for line in shown.export_text().splitlines() for model in ("clip-a", "clip-b") if model in line
    }
    assert "live" in lines["clip-a"] and "rollback target" in lines["clip-b"]

    asked: list[str] = []

    def no(question: str) -> str:
        asked.append(question)
        return "n"

    assert keep_spaces(1, yes=False, ask=no) == 1 and asked  # asked, refused: nothing dropped
    assert client.has_collection(c.collection)
    assert keep_spaces(1, yes=True) == 0
    left = {r.collection for r in spaces(client, VectorStoreSettings(), swaps)}
    assert left == {a.collection, b.collection, d.collection}  # live, rollback target, and the newest old one
    assert alias_target(client, f"{prefix}_live") == a.collection
    admin = OperatorSettings().admin()
    groups = {g.group_id for g in admin.list_consumer_groups().result(timeout=15).valid}
    assert not set(groups_c) & groups
    present = set(admin.list_topics(timeout=15).topics)
    assert not {topics_c.embeddings, topics_c.vectors, topics_c.index_status} & present
    assert topics_c.objects in present  # shared by every space


def test_progress_is_exported_as_gauges() -> None:
    stages = [
        StageProgress("text_embedder", "embedder-text.x", "objects.v1", total=10, lag=4),
        StageProgress("index_updater", "index-updater.x", "embeddings.x.v1", total=8, lag=0),
    ]
    export_progress("x", stages, {"text_embedder": 2.5})
    text = generate_latest(REGISTRY).decode()
    expected: list[Any] = [
        'mmrag_reindex_done{space="x",stage="text_embedder"} 6.0',
        'mmrag_reindex_total{space="x",stage="text_embedder"} 10.0',
        'mmrag_reindex_lag{space="x",stage="text_embedder"} 4.0',
        'mmrag_reindex_rate{space="x",stage="text_embedder"} 2.5',
        'mmrag_reindex_done{space="x",stage="index_updater"} 8.0',
        'mmrag_reindex_rate{space="x",stage="index_updater"} 0.0',
    ]
    assert [line for line in expected if line not in text] == []
