"""Session infrastructure for tests: a real Kafka broker (KRaft, Maven jars), local S3 with notifications and a
milvus-lite server, started once; each test gets its own topic prefix, bucket, queue and collection prefix."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def infra_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infra")


@pytest.fixture(scope="session")
def infra(infra_dir: Path) -> Iterator[object]:
    from local_stack.stack import start_infra, stop_infra

    endpoints = start_infra(infra_dir)
    try:
        yield endpoints
    finally:
        stop_infra(infra_dir)


@pytest.fixture(scope="session")
def bootstrap(infra: object) -> str:
    return str(infra.bootstrap_servers)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-init CLIP saved like a real one (loads through the production code path)."""
    from mmrag.clip import write_random_clip

    return write_random_clip(tmp_path_factory.mktemp("clip") / "clip-random", seed=0)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


@contextmanager
def namespace(endpoints: object, clip_dir: Path, state_dir: Path, unique: str, node_id: str) -> Iterator[object]:
    """A fresh namespace (topics, bucket, queue, collection) on ``endpoints``; stops the services started in it."""
    from local_stack.processes import free_port
    from local_stack.stack import Deployment, stop_services

    dep = Deployment(
        state_dir=state_dir,
        endpoints=endpoints,  # type: ignore[arg-type]
        clip_model_dir=clip_dir,
        topic_prefix=f"t{unique}.",
        bucket=f"bucket-{hashlib.sha1(node_id.encode()).hexdigest()[:8]}",
        queue=f"queue-{unique}",
        shards=2,
        grpc_port=free_port(),
        # named, not the default (Faiss): the on-stack tests start Milvus retrieval workers by name and some check
        # Milvus itself; a Faiss test sets deployment.index_backend = "faiss" before it starts anything
        index_backend="milvus",
    )
    dep.prepare()
    try:
        yield dep
    finally:
        stop_services(dep.state_dir)


@pytest.fixture
def deployment(
    infra: object, clip_dir: Path, tmp_path: Path, unique: str, request: pytest.FixtureRequest
) -> Iterator[object]:
    """A fresh namespace (topics, bucket, queue, collection) with no services started; stops what a test starts.

    The bucket is named after the test, not at random: object ids (bucket/key) reach answer prompts, and a tiny
    model's greedy answer to a fixed prompt is reproducible while one to a prompt that differs each run is not."""
    with namespace(infra, clip_dir, tmp_path / "state", unique, request.node.nodeid) as dep:
        yield dep


@pytest.fixture(scope="session")
def secure_infra(infra: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A second Kafka, secured (SASL_SSL, SCRAM users per principal, ACLs only), beside the session's local S3 and
    milvus-lite."""
    from local_stack.kafka_broker import stop_cluster
    from local_stack.stack import Endpoints, start_kafka

    kafka_dir = tmp_path_factory.mktemp("secure-infra") / "kafka"
    cluster = start_kafka(kafka_dir, secure=True)
    assert cluster.security is not None
    try:
        s3, milvus = infra.s3_endpoint_url, infra.milvus_uri  # type: ignore[attr-defined]
        yield Endpoints(cluster.bootstrap_servers, s3, milvus, str(cluster.security.dir))
    finally:
        stop_cluster(kafka_dir)


@pytest.fixture
def secure_deployment(
    secure_infra: object,
    clip_dir: Path,
    tmp_path: Path,
    unique: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[object]:
    """A namespace on the secured Kafka with every principal's ACLs; this test process is the stack's admin (its
    helpers read and write any topic), each service it starts its own principal."""
    security = secure_infra.security  # type: ignore[attr-defined]
    for key, value in {**security.client_env(), "MMRAG_GRPC_CA": str(security.ca.cert_path)}.items():
        monkeypatch.setenv(key, value)
    with namespace(secure_infra, clip_dir, tmp_path / "state", unique, request.node.nodeid) as dep:
        yield dep


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server (Debian's, installed by scripts/setup.sh) on a free loopback port, nothing persisted."""
    import shutil
    import subprocess

    import redis

    from local_stack.processes import free_port, wait_until

    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is missing -> run scripts/setup.sh (apt-get install redis-server)")
    port, work = free_port(), tmp_path_factory.mktemp("redis")
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(work)]
    with (work / "redis.log").open("wb") as out:
        server = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: _pings(redis.Redis.from_url(url)), 20, f"redis-server on port {port}")
        yield url
    finally:
        server.terminate()
        server.wait(10)


def _pings(client: object) -> bool:
    try:
        return bool(client.ping())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not listening yet
        return False
