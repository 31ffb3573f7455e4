"""Readiness tells the truth about a dependency with no traffic to meet it: an idle text embedder is not ready while
its object store is cut off (refused) or frozen (SIGSTOP: connections hang, only a timeout tells), and ready again
when it answers; the index updater the same with Milvus. Private stores, so the session's keep serving others."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from local_stack.processes import alive_pid
from local_stack.services import Service
from local_stack.stack import Deployment, Endpoints, start_services
from tests.drill_tools import readiness
from tests.kafka_tools import wait_for
from tests.tcp_link import TcpLink

pytestmark = pytest.mark.kafka
FAST = {"MMRAG_DEPENDENCY_CHECK_INTERVAL_S": "0.5", "MMRAG_DEPENDENCY_TIMEOUT_S": "1"}


def not_ready_because(service: object, *words: str) -> bool:
    code, body = readiness(service)  # type: ignore[arg-type]
    return code == 503 and all(w in body for w in words)


def ready(service: object) -> bool:
    return readiness(service)[0] == 200  # type: ignore[arg-type]


def test_an_idle_embedder_is_not_ready_while_its_object_store_is_cut_off_or_frozen(
    deployment: Deployment, infra: Endpoints, tmp_path: Path
) -> None:
    from local_stack.s3 import start_moto, stop_moto

    moto_dir = tmp_path / "s3-private"
    moto_dir.mkdir()
    link = TcpLink(int(start_moto(moto_dir).rsplit(":", 1)[1])).mend()
    try:
        deployment.endpoints = Endpoints(infra.bootstrap_servers, link.url, infra.milvus_uri)
        deployment.prepare()
        [embedder] = start_services([deployment.service("text_embedder", **FAST)])
        wait_for(lambda: ready(embedder), 60, "the embedder ready")
        link.cut()  # stopped: connections refused
        wait_for(lambda: not_ready_because(embedder, "object store down"), 30, "not ready while the store is away")
        link.mend()
        wait_for(lambda: ready(embedder), 30, "ready again once the store answers")
        moto = alive_pid(moto_dir / "moto.json")
        assert moto is not None
        os.kill(moto, signal.SIGSTOP)  # frozen: connections accepted by the kernel, never answered
        try:
            wait_for(lambda: not_ready_because(embedder, "object store down", "no answer within"), 30, "frozen")
        finally:
            os.kill(moto, signal.SIGCONT)
        wait_for(lambda: ready(embedder), 60, "ready again once the store thaws")
    finally:
        link.cut()
        stop_moto(moto_dir)


@contextmanager
def frozen_milvus_behind(
    deployment: Deployment, infra: Endpoints, tmp_path: Path, service: Service
) -> Iterator[Callable[[], None]]:
    """Runs ``service`` on a private milvus-lite, waits until it is ready, freezes Milvus (SIGSTOP) and yields
    what thaws it (SIGCONT); thawed and stopped after the block."""
    from local_stack.milvus import start_milvus_lite, stop_milvus_lite

    milvus_dir = tmp_path / "milvus-private"
    uri = start_milvus_lite(milvus_dir)
    try:
        deployment.endpoints = Endpoints(infra.bootstrap_servers, infra.s3_endpoint_url, uri)
        deployment.prepare()
        service.env.update(deployment.env())
        start_services([service])
        wait_for(lambda: ready(service), 120, f"{service.name} ready")
        milvus = alive_pid(milvus_dir / "milvus.json")
        assert milvus is not None
        os.kill(milvus, signal.SIGSTOP)
        try:
            yield lambda: os.kill(milvus, signal.SIGCONT)
        finally:
            os.kill(milvus, signal.SIGCONT)
    finally:
        stop_milvus_lite(milvus_dir)


def test_the_index_updater_is_not_ready_while_milvus_is_frozen(
    deployment: Deployment, infra: Endpoints, tmp_path: Path
) -> None:
    updater = deployment.service("index_updater", **FAST)
    with frozen_milvus_behind(deployment, infra, tmp_path, updater) as thaw:
        wait_for(lambda: not_ready_because(updater, "milvus down"), 30, "not ready while Milvus is frozen")
        thaw()
        wait_for(lambda: ready(updater), 60, "ready again once Milvus thaws")


def test_a_retrieval_worker_without_milvus_stays_ready_and_says_degraded(
    deployment: Deployment, infra: Endpoints, tmp_path: Path
) -> None:
    """It still answers from its keyword side index, so it stays ready (200) and its detail says degraded."""
    worker = deployment.service("retrieval_worker", "0", MMRAG_SHARD="0", **FAST)
    with frozen_milvus_behind(deployment, infra, tmp_path, worker) as thaw:
        degraded = wait_for(
            lambda: (r := readiness(worker))[0] == 200 and "degraded: milvus down" in r[1] and r, 30, "degraded"
        )
        assert "no answer within" in degraded[1]
        thaw()
        wait_for(lambda: "milvus: ok" in readiness(worker)[1], 60, "ok again once Milvus thaws")
