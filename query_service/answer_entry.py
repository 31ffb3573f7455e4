"""One answer cache entry and its store's failure: what the cache and its stores (in process, Redis) share."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np

from query_service.caches import digest


class AnswerStoreError(RuntimeError):
    """The store (Redis) failed: the cache answers a miss and stores nothing; Ask goes on without it."""


@dataclass(frozen=True)
class CachedAnswer:
    scope: str
    vector: np.ndarray  # unit float32 query vector
    stored_at_ms: int
    objects: dict[str, tuple[str, int]]  # every source's object id -> (version, indexed_at_ms) it was answered from
    sources: bytes = b""  # AskSources
    final: bytes = b""  # AskFinal

    @property
    def id(self) -> str:
        return digest(self.scope.encode(), self.vector.tobytes())

    def to_bytes(self) -> bytes:
        b64 = base64.b64encode
        record = {
            "scope": self.scope,
            "vector": b64(self.vector.tobytes()).decode(),
            "stored_at_ms": self.stored_at_ms,
            "objects": self.objects,
            "sources": b64(self.sources).decode(),
            "final": b64(self.final).decode(),
        }
        return json.dumps(record).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> CachedAnswer:
        record = json.loads(raw)
        b64 = base64.b64decode
        return cls(
            scope=record["scope"],
            vector=np.frombuffer(b64(record["vector"]), dtype=np.float32),
            stored_at_ms=int(record["stored_at_ms"]),
            objects={oid: (str(v), int(t)) for oid, (v, t) in record["objects"].items()},
            sources=b64(record["sources"]),
            final=b64(record["final"]),
        )
