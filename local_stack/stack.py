"""The local stack: Kafka (KRaft, from Maven jars), local S3 with notifications, milvus-lite server, topics, and
every deployable as its own process. Used by `mmrag stack up|down`, the demo and the end-to-end tests."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from confluent_kafka.admin import AdminClient

from local_stack import kafka_broker
from local_stack.milvus import start_milvus_lite, stop_milvus_lite
from local_stack.processes import alive_pid, stop_all_detached
from local_stack.s3 import ensure_bucket_with_queue, start_moto, stop_moto
from local_stack.secure_kafka import GRPC_CA_KEY, SecurityFiles, apply_acls, ensure_users
from local_stack.services import Service
from mmrag.access import DECLARATIONS, principals
from mmrag.object_store import s3_client
from mmrag.settings import S3Settings
from mmrag.topics import Topics, ensure_topics
from operator_cli.deployables import SERVICE_MODULES

log = logging.getLogger(__name__)
ENDPOINTS_FILE = "endpoints.json"
IndexBackend = Literal["milvus", "faiss", "both"]
EncoderBackend = Literal["torch", "onnx"]
# Which retrieval workers serve each shard: Milvus workers search the collection, Faiss workers their shard of
# vectors.v1. With `both` each shard gets one of each; both kinds join retrieval-shard-<k> and answer alike.
SHARD_WORKERS: dict[str, tuple[str, ...]] = {
    "milvus": ("retrieval_worker",),
    "faiss": ("faiss_worker",),
    "both": ("retrieval_worker", "faiss_worker"),
}

# The long-running deployables of a stack besides its shard workers (the deploy files run the same; a test checks).
STACK_SERVICES = (
    "sqs_bridge",
    "normalizer",
    "text_embedder",
    "vision_embedder",
    "index_updater",
    "query_service",
    "llm_worker",
)
# The text embedder runs as two lanes (docs/architecture.md "Embedders" -> "Cost lanes"), as (instance, MMRAG_LANE):
# light in group embedder-text, heavy (objects.heavy.v1) in embedder-text-heavy; the deploy files run the same two.
TEXT_LANES = (("0", "light"), ("heavy", "heavy"))


@dataclass(frozen=True)
class Endpoints:
    """Where the infrastructure of a running stack answers."""

    bootstrap_servers: str
    s3_endpoint_url: str
    milvus_uri: str
    kafka_security: str = ""  # a secured Kafka's files (local_stack.secure_kafka); '' = plaintext

    @property
    def security(self) -> SecurityFiles | None:
        return SecurityFiles(Path(self.kafka_security)) if self.kafka_security else None

    def save(self, state_dir: Path) -> None:
        (state_dir / ENDPOINTS_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, state_dir: Path) -> Endpoints | None:
        path = state_dir / ENDPOINTS_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else None


def start_infra(
    state_dir: Path,
    nodes: int = 1,
    kafka_port: int | None = None,
    s3_port: int | None = None,
    milvus_port: int | None = None,
    secure: bool = False,
) -> Endpoints:
    """Starts Kafka, the local S3 and milvus-lite under ``state_dir``; each one already running there is reused.

    Ports: free ones unless given (Kafka: the first broker port; a restarted cluster keeps its earlier ports).
    ``secure``: Kafka with SASL_SSL and ACLs, a SCRAM user per declared principal (local_stack.secure_kafka)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    cluster = start_kafka(state_dir / "kafka", nodes, kafka_port, secure)
    s3 = _running_url(state_dir / "moto.json", "url") or start_moto(state_dir, s3_port)
    milvus = _running_url(state_dir / "milvus.json", "uri") or start_milvus_lite(state_dir, milvus_port)
    security = str(cluster.security.dir) if cluster.security else ""
    endpoints = Endpoints(cluster.bootstrap_servers, s3, milvus, security)
    endpoints.save(state_dir)
    return endpoints


def start_kafka(
    kafka_dir: Path, nodes: int = 1, kafka_port: int | None = None, secure: bool = False
) -> kafka_broker.KafkaCluster:
    """The stack's Kafka under ``kafka_dir`` (reused while it runs); secured, every declared principal's SCRAM user
    is created or updated from its password file."""
    kafka_broker.fetch_kafka_jars()
    cluster = kafka_broker.load_cluster(kafka_dir)
    if cluster is None or not cluster.is_running():
        ready_s = 60 * nodes  # several JVMs booting on a busy small machine take their time
        cluster = kafka_broker.start_cluster(
            kafka_dir, nodes, first_port=kafka_port, ready_timeout_s=ready_s, secure=secure
        )
    if cluster.security:
        users = [d.name for d in DECLARATIONS]
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers, **cluster.client_config()})
        ensure_users(admin, cluster.security.ensure(users), users)
    return cluster


def _running_url(pidfile: Path, key: str) -> str | None:
    """The address a pidfile records while its process runs (None when it is gone: start it again)."""
    if alive_pid(pidfile) is None:
        return None
    return str(json.loads(pidfile.read_text())[key])


def stop_infra(state_dir: Path) -> None:
    stop_moto(state_dir)
    stop_milvus_lite(state_dir)
    kafka_broker.stop_cluster(state_dir / "kafka")
    (state_dir / ENDPOINTS_FILE).unlink(missing_ok=True)


@dataclass
class Deployment:
    """One namespace of the system on the infrastructure: a topic prefix, a bucket+queue, a collection prefix."""

    state_dir: Path
    endpoints: Endpoints
    clip_model_dir: Path
    topic_prefix: str = ""
    bucket: str = "mmrag-demo"
    queue: str = "mmrag-object-events"
    shards: int = 2
    grpc_port: int = 50051
    queue_url: str = ""
    index_backend: IndexBackend = "faiss"  # milvus-lite searches linearly: Faiss shards hold Search at 100k objects
    encoder_backend: EncoderBackend = "torch"  # the space's encoders (onnx: ONNX Runtime int8); part of its id

    def prepare(self) -> None:
        """Creates the topics, the bucket and its notification queue and, on a secured Kafka, every principal's
        ACLs for this deployment's prefix (idempotent)."""
        bootstrap, security = self.endpoints.bootstrap_servers, self.endpoints.security
        admin = security.client_config() if security else {}
        ensure_topics(bootstrap, Topics(self.topic_prefix), vector_shards=self.shards, client=admin)
        if security:
            apply_acls(AdminClient({"bootstrap.servers": bootstrap, **admin}), principals(self.topic_prefix))
        s3 = self.s3_settings()
        self.queue_url = ensure_bucket_with_queue(s3_client(s3), s3_client(s3, "sqs"), self.bucket, self.queue)

    def s3_settings(self) -> S3Settings:
        return S3Settings(s3_endpoint_url=self.endpoints.s3_endpoint_url)

    def env(self) -> dict[str, str]:
        """The MMRAG_* settings every service of this deployment shares."""
        prefix = self.topic_prefix.rstrip(".-_") or "mmrag"
        return {
            "MMRAG_BOOTSTRAP_SERVERS": self.endpoints.bootstrap_servers,
            "MMRAG_TOPIC_PREFIX": self.topic_prefix,
            "MMRAG_S3_ENDPOINT_URL": self.endpoints.s3_endpoint_url,
            "MMRAG_MILVUS_URI": self.endpoints.milvus_uri,
            "MMRAG_COLLECTION_PREFIX": prefix.replace("-", "_").replace(".", "_"),
            "MMRAG_SHARDS": str(self.shards),
            "MMRAG_CLIP_MODEL_DIR": str(self.clip_model_dir),
            "MMRAG_SQS_QUEUE_URL": self.queue_url,
            "MMRAG_GRPC_PORT": str(self.grpc_port),
            "MMRAG_STATE_DIR": str(self.state_dir),
            "MMRAG_INDEX_BACKEND": self.index_backend,
            **self.encoder_env(),
            **self.security_env(),
        }

    def encoder_env(self) -> dict[str, str]:
        """The space's encoder backend and precision when not torch's defaults (pinned: the space id has them)."""
        return {"MMRAG_ENCODER_BACKEND": "onnx", "MMRAG_PRECISION": "int8"} if self.encoder_backend == "onnx" else {}

    def security_env(self) -> dict[str, str]:
        """On a secured stack: the admin's Kafka identity and the CA gRPC clients trust; {} else."""
        security = self.endpoints.security
        return {**security.client_env(), GRPC_CA_KEY: str(security.ca.cert_path)} if security else {}

    def service(self, name: str, instance: str = "0", **extra: str) -> Service:
        """A deployable of this deployment (not started); ``extra`` are more MMRAG_* settings."""
        env = {**self.env(), "MMRAG_INSTANCE_ID": f"{name}-{instance}", **self.principal_env(name)}
        if name == "query_service":  # the local stack runs with auth off unless told (logged as a WARNING)
            env["MMRAG_AUTH_MODE"] = os.environ.get("MMRAG_AUTH_MODE", "off")
        env.update(extra)
        label = name if instance == "0" else f"{name}-{instance}"
        return Service(label, SERVICE_MODULES[name], env, self.state_dir / "logs")

    def principal_env(self, name: str) -> dict[str, str]:
        """Deployable ``name``'s own Kafka identity on a secured Kafka (its SCRAM user, password file) and, for the
        query service, its gRPC TLS certificate; {} else."""
        security = self.endpoints.security
        if security is None:
            return {}
        return {**security.client_env(name), **(security.grpc_server_env() if name == "query_service" else {})}

    def all_services(self) -> list[Service]:
        lanes = {"text_embedder": self.text_lanes()}
        return [s for n in STACK_SERVICES for s in lanes.get(n, [self.service(n)])] + self.shard_workers()

    def text_lanes(self, **extra: str) -> list[Service]:
        """The text embedder's light and heavy lanes (see TEXT_LANES); ``extra`` are more settings of both."""
        return [self.service("text_embedder", instance, MMRAG_LANE=lane, **extra) for instance, lane in TEXT_LANES]

    def shard_workers(self, **extra: str) -> list[Service]:
        """One retrieval worker per shard of each kind ``index_backend`` serves from (see SHARD_WORKERS)."""
        return [
            self.service(kind, str(k), MMRAG_SHARD=str(k), **extra)
            for kind in SHARD_WORKERS[self.index_backend]
            for k in range(self.shards)
        ]


def start_services(services: list[Service], timeout_s: float = 180) -> list[Service]:
    """Starts every service, then waits for each to be ready (they warm up in parallel)."""
    for service in services:
        service.start()
    for service in services:
        service.wait_ready(timeout_s)
    return services


def stop_services(state_dir: Path) -> None:
    """Stops every service a stack under ``state_dir`` started (their pidfiles), even from another process."""
    stop_all_detached(sorted((state_dir / "logs").glob("*.pid.json")), timeout_s=20)
