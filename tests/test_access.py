"""The Kafka access declaration (mmrag.access) matches what each deployable's real wiring touches: its consumer group,
the topics its runner reads, the topics its handler writes, its transactional ids. What a run touches beyond its
wiring is refused by the secured broker (tests/test_secure_stack.py runs the pipeline with exactly these ACLs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mmrag.access import DECLARATIONS, Principal, declaration, markdown_table, principals, resolve
from mmrag.telemetry import Probes
from operator_cli.deployables import SERVICE_MODULES

pytestmark = pytest.mark.unit
PREFIX = "acl-test."
# Deployables that never connect to Kafka (the directory watch writes into the object store only).
WITHOUT_KAFKA = {"watch"}


@pytest.fixture
def wiring_env(monkeypatch: pytest.MonkeyPatch, clip_dir: Path, tmp_path: Path) -> None:
    """Settings of a deployment under PREFIX; nothing is reachable (building a stage connects nowhere)."""
    for key, value in {
        "MMRAG_TOPIC_PREFIX": PREFIX,
        "MMRAG_CLIP_MODEL_DIR": str(clip_dir),
        "MMRAG_INSTANCE_ID": "replica-7",
        "MMRAG_STATE_DIR": str(tmp_path),
        "MMRAG_INDEX_BACKEND": "faiss",
    }.items():
        monkeypatch.setenv(key, value)


def principal(name: str) -> Principal:
    return resolve(declaration(name), PREFIX)


def assert_runner_declared(runner: Any, p: Principal, outputs: set[str]) -> None:
    """The runner's group, inputs, transactional id and outputs (its handler's and the DLQ) are all declared."""
    assert runner.group in p.groups, f"{p.name}: group {runner.group} undeclared"
    assert set(runner.decoders) <= p.reads, f"{p.name}: reads {set(runner.decoders) - p.reads} undeclared"
    assert outputs | {runner.settings.topics.dlq} <= p.writes, f"{p.name}: writes {outputs - p.writes} undeclared"
    if runner.transactional:
        assert p.transactional_id_prefix is not None
        assert f"{runner.group}.{runner.settings.instance_id}".startswith(p.transactional_id_prefix)
    else:
        assert p.transactional_id_prefix is None, f"{p.name}: declared transactional but its runner is not"


def test_every_kafka_deployable_is_declared_once() -> None:
    names = [d.name for d in DECLARATIONS]
    assert len(names) == len(set(names))
    assert set(names) == set(SERVICE_MODULES) - WITHOUT_KAFKA


def test_principals_resolve_the_deployment_prefix_and_a_space() -> None:
    live = {p.name: p for p in principals("tp.")}
    assert live["text_embedder"].writes == {"tp.embeddings.v1", "tp.objects.heavy.v1", "tp.dlq.v1"}
    assert live["text_embedder"].groups == {"tp.embedder-text", "tp.embedder-text-heavy"}
    assert live["retrieval_worker"].group_prefixes == {"tp.retrieval-shard-"}
    assert "tp.index-status.v1" not in live["text_embedder"].writes | live["text_embedder"].reads
    spaced = resolve(declaration("index_updater"), "tp.", "s2")
    assert {"tp.embeddings.v1", "tp.embeddings.s2.v1", "tp.vectors.s2.v1"} <= spaced.reads
    assert {"tp.index-updater", "tp.index-updater.s2"} == spaced.groups
    with pytest.raises(KeyError, match="no principal 'nobody'"):
        declaration("nobody")


def test_normalizer_wiring_is_declared(wiring_env: None) -> None:
    from producers.normalizer import NormalizerSettings, build

    runner: Any = build(NormalizerSettings(), Probes("normalizer"))
    assert_runner_declared(runner, principal("normalizer"), {runner.handler.topics.objects})


@pytest.mark.parametrize("lane", ["light", "heavy", "all"])
def test_text_embedder_lanes_are_declared(wiring_env: None, monkeypatch: pytest.MonkeyPatch, lane: str) -> None:
    from consumers.text_embedder.__main__ import build
    from consumers.text_embedder.handler import TextEmbedderSettings

    monkeypatch.setenv("MMRAG_LANE", lane)
    runner: Any = build(TextEmbedderSettings(), Probes("text_embedder"))
    outputs = {runner.handler.topic} | ({runner.handler.heavy_topic} if lane == "light" else set())
    assert_runner_declared(runner, principal("text_embedder"), outputs)


def test_vision_embedder_wiring_is_declared(wiring_env: None) -> None:
    from consumers.vision_embedder.__main__ import build
    from consumers.vision_embedder.handler import VisionEmbedderSettings

    runner: Any = build(VisionEmbedderSettings(), Probes("vision_embedder"))
    assert_runner_declared(runner, principal("vision_embedder"), {runner.handler.topic})


def test_index_updater_wiring_is_declared(wiring_env: None) -> None:
    from index_updater.__main__ import build
    from index_updater.handler import IndexUpdaterSettings

    runner: Any = build(IndexUpdaterSettings(), Probes("index_updater"))
    handler = runner.handler
    assert handler.vectors_topic is not None, "the faiss backend writes vectors"
    assert_runner_declared(runner, principal("index_updater"), {handler.status_topic, handler.vectors_topic})
    assert handler.settings.topics.vectors in principal("index_updater").reads  # restored from it


def test_retrieval_worker_wiring_is_declared(wiring_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from consumers.retrieval_worker.handler import RetrievalWorkerSettings
    from consumers.retrieval_worker.request_loop import request_loop

    monkeypatch.setenv("MMRAG_SHARD", "1")
    settings = RetrievalWorkerSettings()
    runner = request_loop(settings, "space", object(), Probes("retrieval_worker"))  # type: ignore[arg-type]
    p = principal("retrieval_worker")
    assert any(runner.group.startswith(prefix) for prefix in p.group_prefixes), runner.group
    assert set(runner.decoders) <= p.reads
    assert {settings.topics.search_replies, settings.topics.dlq} <= p.writes
    assert not runner.transactional and p.transactional_id_prefix is None


def test_job_and_worker_groups_are_declared(wiring_env: None) -> None:
    from consumers.llm_worker.settings import LlmWorkerSettings
    from index_updater.access import ACCESS_GROUP
    from index_updater.pruning import PruningSettings
    from producers.backfill import BackfillSettings, transactional_id
    from query_service.shard_presence import shard_groups

    llm = LlmWorkerSettings()
    assert llm.group_id(llm.group) in principal("llm_worker").groups
    assert PruningSettings().group_id(ACCESS_GROUP) in principal("ttl_pruning").groups
    backfill = BackfillSettings(backfill_uri="s3://docs/a/")
    prefix = principal("backfill").transactional_id_prefix
    assert prefix is not None and transactional_id(backfill).startswith(prefix)
    described = principal("query_service").groups_described
    assert all(any(g.startswith(d) for d in described) for g in shard_groups(PREFIX, 3).values())


def test_the_docs_show_the_generated_principals_table() -> None:
    """docs/architecture.md "Security" carries the table markdown_table() generates (regenerate it when it fails)."""
    docs = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text()
    assert markdown_table() in docs
