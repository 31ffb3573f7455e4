"""What a running local stack records in its state dir (`stack.json`): the deployment and every service process,
so `mmrag stack status|env|down`, the supervisor and every other `mmrag` command find it from any process."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from local_stack.secure_kafka import GRPC_CA_KEY, SECURITY_KEYS, security_dir
from local_stack.services import Service
from mmrag.settings import cache_dir

if TYPE_CHECKING:
    from local_stack.stack import Deployment

STACK_FILE = "stack.json"


def default_state_dir() -> Path:
    """Where `mmrag stack` keeps a stack: $MMRAG_STATE_DIR, else `<cache>/stack` (the same from any directory)."""
    if os.environ.get("MMRAG_STATE_DIR"):
        return Path(os.environ["MMRAG_STATE_DIR"]).absolute()
    return cache_dir() / "stack"


@dataclass
class ServiceRecord:
    """How to (re)start one service process: its module, settings, probe port and log directory."""

    name: str
    module: str
    env: dict[str, str]
    log_dir: str
    probe_port: int

    @classmethod
    def of(cls, service: Service) -> ServiceRecord:
        return cls(service.name, service.module, service.env, str(service.log_dir), service.probe_port)

    def service(self) -> Service:
        return Service(self.name, self.module, self.env, Path(self.log_dir), self.probe_port)

    @property
    def grpc_port(self) -> int | None:
        port = self.env.get("MMRAG_GRPC_PORT") if self.module == "query_service" else None
        return int(port) if port else None


@dataclass
class StackRecord:
    """A stack as `mmrag stack up` started it: the shared MMRAG_* settings of its services, and the services."""

    state_dir: str
    settings: dict[str, str]
    bucket: str
    services: list[ServiceRecord] = field(default_factory=list)

    def save(self) -> None:
        path = Path(self.state_dir) / STACK_FILE
        tmp = path.with_name(f".{STACK_FILE}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)  # a concurrent reader never sees half a file

    @classmethod
    def load(cls, state_dir: Path) -> StackRecord | None:
        path = state_dir / STACK_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(**{**data, "services": [ServiceRecord(**s) for s in data["services"]]})

    def deployment(self) -> Deployment:
        """The recorded deployment (topics, bucket, queue, endpoints) as the object the stack started from."""
        from local_stack.stack import Deployment, Endpoints

        env = self.settings
        return Deployment(
            state_dir=Path(self.state_dir),
            endpoints=Endpoints(
                env["MMRAG_BOOTSTRAP_SERVERS"],
                env["MMRAG_S3_ENDPOINT_URL"],
                env["MMRAG_MILVUS_URI"],
                security_dir(env),
            ),
            clip_model_dir=Path(env["MMRAG_CLIP_MODEL_DIR"]),
            topic_prefix=env["MMRAG_TOPIC_PREFIX"],
            bucket=self.bucket,
            queue=env["MMRAG_SQS_QUEUE_URL"].rsplit("/", 1)[-1],
            shards=int(env["MMRAG_SHARDS"]),
            grpc_port=int(env["MMRAG_GRPC_PORT"]),
            queue_url=env["MMRAG_SQS_QUEUE_URL"],
            index_backend=env.get("MMRAG_INDEX_BACKEND", "milvus"),  # type: ignore[arg-type]
            encoder_backend=env.get("MMRAG_ENCODER_BACKEND", "torch"),  # type: ignore[arg-type]
        )

    def client_env(self) -> dict[str, str]:
        """The MMRAG_* variables a client of this stack needs (`mmrag stack env`), in a stable order."""
        keys = (
            "MMRAG_STATE_DIR",
            "MMRAG_BOOTSTRAP_SERVERS",
            "MMRAG_TOPIC_PREFIX",
            "MMRAG_S3_ENDPOINT_URL",
            "MMRAG_SQS_QUEUE_URL",
            "MMRAG_MILVUS_URI",
            "MMRAG_COLLECTION_PREFIX",
            "MMRAG_SHARDS",
            "MMRAG_CLIP_MODEL_DIR",
            "MMRAG_INDEX_BACKEND",
            "MMRAG_ENCODER_BACKEND",
            "MMRAG_PRECISION",
            *SECURITY_KEYS,
            GRPC_CA_KEY,
        )
        env = {key: self.settings[key] for key in keys if key in self.settings}
        env["MMRAG_BUCKET"] = self.bucket
        grpc = [s.grpc_port for s in self.services if s.grpc_port]
        if grpc:
            env["MMRAG_QUERY_TARGET"] = f"127.0.0.1:{grpc[0]}"
        return env


@contextmanager
def stack_lock(state_dir: Path) -> Iterator[None]:
    """Serializes `stack up` and `stack down` on one state dir (a second caller waits for the first)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "stack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
