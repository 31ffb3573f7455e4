"""Settings bases shared by every deployable: env prefix MMRAG_, frozen, validated at start."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mmrag.topics import MAX_MESSAGE_BYTES, Topics


def cache_dir() -> Path:
    """The project's per-user cache (Kafka jars, models, the local stack): $MMRAG_CACHE_DIR or ~/.cache/kafka-mmrag."""
    return Path(os.environ.get("MMRAG_CACHE_DIR") or Path.home() / ".cache" / "kafka-mmrag")


def default_clip_model_dir() -> Path:
    """Where the services look for CLIP unless MMRAG_CLIP_MODEL_DIR says otherwise, and where the demo and
    `mmrag stack up` put the demo CLIP: one place for both."""
    return cache_dir() / "models" / "clip-easyvqa"


class BaseServiceSettings(BaseSettings):
    """What every deployable needs: Kafka, topics, identity, probes and retry bounds."""

    model_config = SettingsConfigDict(env_prefix="MMRAG_", frozen=True, extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    instance_id: str = Field(default_factory=socket.gethostname, description="stable per replica: transactional.id")
    probe_host: str = "127.0.0.1"
    probe_port: int = Field(default=0, description="HTTP /metrics, /healthz, /readyz; 0 = any free port")
    log_level: str = "INFO"
    max_batch: int = 32
    max_wait_ms: int = 200
    retry_attempts: int = Field(default=4, description="quick retries of a batch before the stage backs off")
    retry_max_total_s: float = Field(default=10.0, description="time for those quick retries")
    retry_initial_s: float = 0.2
    retry_max_s: float = 2.0
    backoff_max_s: float = Field(
        default=30.0, description="longest back-off while a dependency is down (the stage pauses, never DLQs)"
    )
    transaction_timeout_ms: int = 30000
    max_poll_interval_ms: int = Field(default=300000, description="the consumer's max.poll.interval.ms")
    max_message_bytes: int = Field(
        default=MAX_MESSAGE_BYTES,
        description="largest record a stage produces (producer message.max.bytes, topics' max.message.bytes); "
        "fits an EmbeddingBatch at the text embedder's chunk cap; an item whose output is larger goes to the DLQ",
    )
    fault_hold_before_commit_s: float = Field(
        default=0.0, description="fault tests only: write <state_dir>/hold-<stage> and wait before committing"
    )
    state_dir: Path = Path(".mmrag")

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

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


class S3Settings(BaseSettings):
    """Where the object store is: the local S3 of the stack by default, real S3/MinIO by endpoint and keys."""

    model_config = SettingsConfigDict(env_prefix="MMRAG_", frozen=True, extra="ignore")

    s3_endpoint_url: str | None = "http://127.0.0.1:9000"
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr = SecretStr("mmrag")
    s3_secret_access_key: SecretStr = SecretStr("mmrag-secret")


class SpaceSettings(BaseSettings):
    """The embedding space: models and fusion weights. Its id is a hash of these (see mmrag.space)."""

    model_config = SettingsConfigDict(env_prefix="MMRAG_", frozen=True, extra="ignore")

    clip_model_dir: Path = Field(default_factory=default_clip_model_dir)
    # w_t² + w_i² = 1: a record with both halves is a unit vector, so its inner product is a weighted cosine.
    # Text leans heavier because CLIP's text-image cosines run high for any text (see docs/architecture.md).
    text_weight: float = 0.8
    image_weight: float = 0.6
    clip_text_for_text: bool = Field(
        default=False,
        description="fill text documents' CLIP half with CLIP's text tower; off because CLIP's text-text cosines run "
        "far above its text-image cosines (the modality gap), which ranked every document above every image",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32",
        description="CLIP's precision in every process of the space, on any device (part of the space id unless "
        "fp32); never timed per process: bf16 vectors differ from fp32 ones in the third decimal",
    )
    torch_threads: int = 0


class VectorStoreSettings(BaseSettings):
    """Milvus (milvus-lite server by default, a real Milvus by URI) and how vectors are sharded."""

    model_config = SettingsConfigDict(env_prefix="MMRAG_", frozen=True, extra="ignore")

    milvus_uri: str = "http://127.0.0.1:19530"
    milvus_token: SecretStr = SecretStr("")
    collection_prefix: str = "mmrag"
    shards: int = Field(default=2, ge=1, description="retrieval shards: one retrieval-worker group each")

    def collection_for(self, space_id: str) -> str:
        return f"{self.collection_prefix}_{space_id}"

    @property
    def live_alias(self) -> str:
        return f"{self.collection_prefix}_live"
