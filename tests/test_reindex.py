"""`mmrag reindex` on the real broker, local S3 and milvus-lite: a corpus indexed by the live space (test CLIP A) is
replayed from objects.v1 into a space of the same models (identical ids, bit-for-bit the same vectors, the space's
spec kept on its collection) while the live collection stays behind the alias; the alias swaps to it once it caught
up and rolls back. A space of another CLIP, with queries running through the swap, is
tests/test_reindex_serving.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from local_stack.stack import Deployment, start_services
from mmrag.milvus_index import MilvusIndex, alias_target, milvus_client
from mmrag.object_store import S3ObjectStore
from mmrag.settings import SpaceSettings
from mmrag.space import EmbeddingSpace, space_from_settings
from mmrag.space_catalog import collection_spec
from mmrag.vector_index import VectorRow
from operator_cli.connection import OperatorSettings
from operator_cli.lag import group_lags
from operator_cli.main import main
from operator_cli.reindex import caught_up, progress, rollback, start_space, stop_space, swap_to
from producers.upload import upload_files
from tests.documents import circle_png
from tests.kafka_tools import wait_for

pytestmark = pytest.mark.kafka
LIVE_GROUPS = ("embedder-text", "embedder-vision", "index-updater")


def live_caught_up() -> bool:
    settings = OperatorSettings()
    lags = {g.group: g.total for g in group_lags(settings)}
    return all(lags.get(settings.topic_prefix + g) == 0 for g in LIVE_GROUPS)


def upload_corpus(deployment: Deployment, tmp_path: Path) -> list[str]:
    """Uploads the re-index tests' corpus (two texts and an image under ``c/``); returns their object ids."""
    store, bucket = S3ObjectStore(deployment.s3_settings(), "test"), deployment.bucket
    (tmp_path / "a.md").write_text("# Partitions\nA topic is split into partitions; each is an ordered log.\n")
    (tmp_path / "b.md").write_text("# Compaction\nA compacted topic keeps the latest value of every key.\n")
    (tmp_path / "circle.png").write_bytes(circle_png("blue"))
    upload_files(store, bucket, [tmp_path / "a.md", tmp_path / "b.md", tmp_path / "circle.png"], prefix="c")
    return [f"{bucket}/c/a.md", f"{bucket}/c/b.md", f"{bucket}/c/circle.png"]


def rows_of(uri: str, collection: str, space: EmbeddingSpace, oids: list[str]) -> dict[str, VectorRow]:
    index = MilvusIndex(uri, collection, space.dim)
    index.start()
    return {r.vector_id: r for oid in oids for r in index.rows_of(oid)}


def vector_bytes(rows: dict[str, VectorRow]) -> dict[str, bytes]:
    return {vid: np.asarray(r.vector, np.float32).tobytes() for vid, r in rows.items()}


def test_reindex_replays_the_same_space_bit_for_bit_then_swap_and_rollback(  # type: ignore[no-untyped-def]
    deployment, clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = deployment.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    live = [deployment.service(n) for n in ("sqs_bridge", "normalizer", "text_embedder", "vision_embedder")]
    live.append(deployment.service("index_updater"))
    start_services(live)
    oids = upload_corpus(deployment, tmp_path)
    space_a = space_from_settings(SpaceSettings(clip_model_dir=clip_dir))
    uri, prefix = env["MMRAG_MILVUS_URI"], env["MMRAG_COLLECTION_PREFIX"]
    collection_a = f"{prefix}_{space_a.id}"

    def live_indexed() -> bool:
        found = rows_of(uri, collection_a, space_a, oids)
        return {r.object_id for r in found.values()} == set(oids) and live_caught_up()

    wait_for(live_indexed, 240, "the corpus indexed by the live space")
    for service in live[2:]:
        service.stop()  # the machine has 2 cores; the live space's serving part is Milvus behind the alias
    rows_a = rows_of(uri, collection_a, space_a, oids)

    try:
        start_space("same", {})
        wait_for(lambda: caught_up(progress("same")), 420, "the space caught up")
        capsys.readouterr()
        assert main(["reindex", "--status", "--json"]) == 0  # from another terminal: the space last started
        status = json.loads(capsys.readouterr().out)
        assert status["space"] == "same" and all(s["lag"] == 0 for s in status["stages"]), status
    finally:
        stop_space("same")

    client = milvus_client(uri)  # its own channel, keepalive the server takes
    assert alias_target(client, f"{prefix}_live") == collection_a  # a re-index never takes the alias itself
    same = rows_of(uri, f"{collection_a}_same", space_a, oids)
    assert vector_bytes(same) == vector_bytes(rows_a)
    assert {vid: (r.text, r.shard, r.has_image) for vid, r in same.items()} == {
        vid: (r.text, r.shard, r.has_image) for vid, r in rows_a.items()
    }

    live, spec = collection_spec(client, f"{prefix}_live")
    assert live == collection_a and spec is not None and (spec.space_id, spec.space_name) == (space_a.id, "")
    _, spec_same = collection_spec(client, f"{collection_a}_same")
    assert spec_same == replace(spec, space_name="same", collection=f"{collection_a}_same")

    assert swap_to("same") == f"{collection_a}_same"
    assert alias_target(client, f"{prefix}_live") == f"{collection_a}_same"
    assert rollback() == collection_a
    assert alias_target(client, f"{prefix}_live") == collection_a
