"""Settings bases shared by every deployable: env prefix MMRAG_, frozen, validated at start."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mmrag.encoder_backend import check_backend
from mmrag.kafka_security import KafkaSecuritySettings, SecretFiles
from mmrag.topics import MAX_MESSAGE_BYTES, Topics


def cache_dir() -> Path:
    """The project's per-user cache (Kafka jars, models, the local stack): $MMRAG_CACHE_DIR or ~/.cache/kafka-mmrag."""
    return Path(os.environ.get("MMRAG_CACHE_DIR") or Path.home() / ".cache" / "kafka-mmrag")


def default_clip_model_dir() -> Path:
    """Where the services look for CLIP unless MMRAG_CLIP_MODEL_DIR says otherwise, and where the demo and
    `mmrag stack up` put the demo CLIP: one place for both."""
    return cache_dir() / "models" / "clip-easyvqa"


def group_name(topic_prefix: str, base: str, space_name: str = "") -> str:
    """Consumer group ``base`` of the deployment ``topic_prefix`` in a space: ``<prefix><base>`` for the live space,
    ``<prefix><base>.<space name>`` else. Deployments sharing a cluster under different prefixes share no group (a
    shared group rebalances across them) and no transactional id (their producers would fence each other)."""
    return f"{topic_prefix}{base}" + (f".{space_name}" if space_name else "")


class BaseServiceSettings(KafkaSecuritySettings):
    """What every deployable needs: Kafka (and how it authenticates), topics, identity, probes and retry bounds."""

    model_config = SettingsConfigDict(env_prefix="MMRAG_", frozen=True, extra="ignore")

    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers (host:port,...)")
    topic_prefix: str = Field(default="", description="prefix of every topic name (one deployment per prefix)")
    instance_id: str = Field(default_factory=socket.gethostname, description="stable per replica: transactional.id")
    probe_host: str = Field(default="127.0.0.1", description="address the probe/metrics HTTP server binds")
    probe_port: int = Field(default=0, description="HTTP /metrics, /healthz, /readyz; 0 = any free port")
    probe_tls_cert: Path | None = Field(default=None, description="serve the probe port over TLS: certificate PEM")
    probe_tls_key: Path | None = Field(default=None, description="... and its private key PEM (both or neither)")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    max_batch: int = Field(default=32, description="most messages one poll batch takes")
    max_wait_ms: int = Field(default=200, description="longest wait to fill a poll batch")
    retry_attempts: int = Field(default=4, description="quick retries of a batch before the stage backs off")
    retry_max_total_s: float = Field(default=10.0, description="time for those quick retries")
    retry_initial_s: float = Field(default=0.2, description="first quick-retry wait (jittered, doubling)")
    retry_max_s: float = Field(default=2.0, description="longest quick-retry wait")
    backoff_max_s: float = Field(
        default=30.0, description="longest back-off while a dependency is down (the stage pauses, never DLQs)"
    )
    dependency_check_interval_s: float = Field(
        default=2.0, description="how often the stage asks its object store / vector store whether it answers"
    )
    dependency_timeout_s: float = Field(
        default=3.0, description="no answer within this long: the dependency counts as down (frozen or unreachable)"
    )
    transaction_timeout_ms: int = Field(default=30000, description="Kafka transaction.timeout.ms of the stage")
    max_poll_interval_ms: int = Field(default=300000, description="the consumer's max.poll.interval.ms")
    max_message_bytes: int = Field(
        default=MAX_MESSAGE_BYTES,
        description="largest record a stage produces (producer message.max.bytes, topics' max.message.bytes); "
        "fits an EmbeddingBatch at the text embedder's chunk cap; an item whose output is larger goes to the DLQ",
    )
    fault_hold_before_commit_s: float = Field(
        default=0.0, description="fault tests only: write <state_dir>/hold-<stage> and wait before committing"
    )
    state_dir: Path = Field(default=Path(".mmrag"), description="local state (fault-test markers, stack files)")
    space_name: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_]{0,32}$",
        description="a re-index space (`mmrag reindex --space`): its consumer groups are <group>.<name>, its "
        "embeddings/vectors/index-status topics and its collection carry the name; '' = the live space",
    )

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix, self.space_name)

    def group_id(self, base: str) -> str:
        """Consumer group ``base`` of this deployment, whatever its space: ``<topic prefix><base>``."""
        return group_name(self.topic_prefix, base)

    def consumer_group(self, base: str) -> str:
        """The group of stage ``base`` in this deployment and space (see ``group_name``)."""
        return group_name(self.topic_prefix, base, self.space_name)

    @property
    def commit_deadline_s(self) -> float:
        """Bound on producing, flushing and committing one batch: half of the shorter of the transaction timeout
        and max.poll.interval.ms, so a slow commit is given up (and the batch retried) before either passes."""
        return min(self.transaction_timeout_ms, self.max_poll_interval_ms) / 2000

    def printable(self) -> str:
        """The settings as JSON with secrets masked (for --print-config)."""
        data: dict[str, Any] = {}
        for name, value in self:
            data[name] = "***" if isinstance(value, SecretStr) else value
        return json.dumps(data, indent=2, default=str, sort_keys=True)


class S3Settings(SecretFiles):
    """Where the object store is: the local S3 of the stack by default, real S3/MinIO by endpoint and keys."""

    model_config = SettingsConfigDict(env_prefix="MMRAG_", frozen=True, extra="ignore")

    s3_endpoint_url: str | None = Field(
        default="http://127.0.0.1:9000", description="S3/MinIO endpoint; unset for AWS S3 itself"
    )
    s3_region: str = Field(default="us-east-1", description="S3 region")
    s3_access_key_id: SecretStr = Field(default=SecretStr("mmrag"), description="S3 access key id")
    s3_secret_access_key: SecretStr = Field(default=SecretStr("mmrag-secret"), description="S3 secret key")


class SpaceSettings(BaseSettings):
    """The embedding space: models and fusion weights. Its id is a hash of these (see mmrag.space)."""

    model_config = SettingsConfigDict(env_prefix="MMRAG_", frozen=True, extra="ignore")

    clip_model_dir: Path = Field(
        default_factory=default_clip_model_dir, description="CLIP directory (save_pretrained layout)"
    )
    # w_t² + w_i² = 1: a record with both halves is a unit vector, so its inner product is a weighted cosine.
    # Text leans heavier because CLIP's text-image cosines run high for any text (see docs/architecture.md).
    text_weight: float = Field(default=0.8, description="fusion weight of the MiniLM half")
    image_weight: float = Field(default=0.6, description="fusion weight of the CLIP half")
    clip_text_for_text: bool = Field(
        default=False,
        description="fill text documents' CLIP half with CLIP's text tower; off because CLIP's text-text cosines run "
        "far above its text-image cosines (the modality gap), which ranked every document above every image",
    )
    precision: Literal["fp32", "bf16", "fp16", "int8"] = Field(
        default="fp32",
        description="the encoders' precision in every process of the space, on any device (part of the space id "
        "unless torch fp32); torch: fp32, bf16 or fp16 (CLIP only); onnx: fp32 or int8 (every tower); never timed "
        "per process: bf16 vectors differ from fp32 ones in the third decimal",
    )
    encoder_backend: Literal["torch", "onnx"] = Field(
        default="torch",
        description="what runs the space's encoders: torch, or ONNX Runtime on the CPU (towers exported once, "
        "cached under the models cache); part of the space id",
    )
    torch_threads: int = Field(default=0, description="intra-op threads of torch or ONNX Runtime; 0 = their default")

    @model_validator(mode="before")
    @classmethod
    def _onnx_runs_int8_unless_told(cls, data: Any) -> Any:
        """MMRAG_ENCODER_BACKEND=onnx without MMRAG_PRECISION: int8 (bench.retrieval_eval lost nothing with it)."""
        if isinstance(data, dict) and data.get("encoder_backend") == "onnx" and "precision" not in data:
            return {**data, "precision": "int8"}
        return data

    @model_validator(mode="after")
    def _backend_runs_precision(self) -> SpaceSettings:
        check_backend(self.encoder_backend, self.precision)
        return self


class VectorStoreSettings(SecretFiles):
    """Milvus (milvus-lite server by default, a real Milvus by URI) and how vectors are sharded."""

    model_config = SettingsConfigDict(env_prefix="MMRAG_", frozen=True, extra="ignore")

    milvus_uri: str = Field(default="http://127.0.0.1:19530", description="Milvus (or milvus-lite server) URI")
    milvus_token: SecretStr = Field(default=SecretStr(""), description="Milvus token (user:password), if any")
    collection_prefix: str = Field(default="mmrag", description="collections are <prefix>_<space id>")
    shards: int = Field(default=2, ge=1, description="retrieval shards: one retrieval-worker group each")

    def collection_for(self, space_id: str, space_name: str = "") -> str:
        """``<prefix>_<space id>``, with ``_<space name>`` for a named re-index space."""
        return f"{self.collection_prefix}_{space_id}" + (f"_{space_name}" if space_name else "")

    @property
    def live_alias(self) -> str:
        return f"{self.collection_prefix}_live"
