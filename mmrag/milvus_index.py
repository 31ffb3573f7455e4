"""Milvus adapter of VectorIndex: one collection per embedding space, reached through the alias ``<prefix>_live``.

Works against milvus-lite run as a local server and against a real Milvus deployment by URI (same code path).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from mmrag.errors import RetryableError
from mmrag.settings import VectorStoreSettings
from mmrag.space import EmbeddingSpace
from mmrag.vector_index import Hit, VectorRow

log = logging.getLogger(__name__)

STAGE = "milvus"
PAYLOAD_FIELDS = [
    "id",
    "object_id",
    "version",
    "chunk_index",
    "shard",
    "text",
    "char_start",
    "char_end",
    "page",
    "has_text",
    "has_image",
    "event_time_ms",
    "indexed_at_ms",
]
MAX_TEXT = 16384


def _quote(value: str) -> str:
    return json.dumps(value)  # Milvus filter strings take JSON-style escaping


class MilvusIndex:
    """Cheap constructor; ``start()`` connects and creates the collection and alias when missing."""

    def __init__(self, uri: str, collection: str, dim: int, token: str = "", alias: str | None = None) -> None:
        self.uri = uri
        self.collection = collection
        self.dim = dim
        self.token = token
        self.alias = alias
        self._client: MilvusClient | None = None

    @classmethod
    def for_space(cls, settings: VectorStoreSettings, space: EmbeddingSpace) -> MilvusIndex:
        """The collection of ``space``; the live alias is created with it when no other space holds it."""
        return cls(
            settings.milvus_uri,
            settings.collection_for(space.id),
            space.dim,
            settings.milvus_token.get_secret_value(),
            alias=settings.live_alias,
        )

    @property
    def client(self) -> MilvusClient:
        if self._client is None:
            raise RuntimeError(f"MilvusIndex({self.collection}) used before start()")
        return self._client

    def start(self) -> None:
        try:
            self._client = MilvusClient(uri=self.uri, token=self.token)
            self._ensure(lambda: self.client.has_collection(self.collection), self._create)
            self._client.load_collection(self.collection)
            if self.alias:
                alias = self.alias
                self._ensure(
                    lambda: self._alias_target() is not None, lambda: self.client.create_alias(self.collection, alias)
                )
        except MilvusException as exc:
            raise RetryableError(
                STAGE,
                self.uri,
                f"cannot open collection {self.collection}: {exc}",
                "check that Milvus runs at MMRAG_MILVUS_URI",
            ) from exc

    @staticmethod
    def _ensure(exists: Callable[[], bool], create: Callable[[], object]) -> None:
        """Creates what is missing; another process (updater, retrieval workers) winning the race is fine."""
        if exists():
            return
        try:
            create()
        except MilvusException:
            if not exists():
                raise

    def _alias_target(self) -> str | None:
        """The collection the alias points at, or None when no collection holds it."""
        if self.alias not in self.client.list_aliases().get("aliases", []):
            return None
        return str(self.client.describe_alias(self.alias)["collection_name"])

    def _create(self) -> None:
        c = self.client
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=32)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("object_id", DataType.VARCHAR, max_length=2048)
        schema.add_field("version", DataType.VARCHAR, max_length=512)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT * 4)
        for name in ("chunk_index", "shard", "char_start", "char_end", "page", "event_time_ms", "indexed_at_ms"):
            schema.add_field(name, DataType.INT64)
        schema.add_field("has_text", DataType.BOOL)
        schema.add_field("has_image", DataType.BOOL)
        index = c.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="IP")
        c.create_collection(self.collection, schema=schema, index_params=index)
        log.info("created Milvus collection %s (dim %d) at %s", self.collection, self.dim, self.uri)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MilvusException as exc:
            raise RetryableError(
                STAGE, self.collection, f"{what} failed: {exc}", "check Milvus health; the batch is retried"
            ) from exc

    def upsert(self, rows: Sequence[VectorRow]) -> None:
        if rows:
            self._call("upsert", self.client.upsert, self.collection, [_to_entity(r) for r in rows])

    def delete(self, vector_ids: Sequence[str]) -> None:
        if vector_ids:
            self._call("delete", self.client.delete, self.collection, ids=list(vector_ids))

    def rows_of(self, object_id: str) -> list[VectorRow]:
        found = self._call(
            "query",
            self.client.query,
            self.collection,
            filter=f"object_id == {_quote(object_id)}",
            output_fields=[*PAYLOAD_FIELDS, "vector"],
            consistency_level="Strong",  # read-your-writes: fusion merges into what the last upsert wrote
        )
        return [_to_row(e, None) for e in found]

    def count(self) -> int:
        found = self._call("count", self.client.query, self.collection, filter='id != ""', output_fields=["count(*)"])
        return int(found[0]["count(*)"])

    def search(self, query: np.ndarray, top_k: int, shard: int | None = None) -> list[Hit]:
        found = self._call(
            "search",
            self.client.search,
            self.collection,
            data=[np.asarray(query, dtype=np.float32).tolist()],
            limit=top_k,
            filter="" if shard is None else f"shard == {int(shard)}",
            output_fields=PAYLOAD_FIELDS,
            search_params={"metric_type": "IP"},
        )
        return [Hit(_to_row(h["entity"], h["id"]), float(h["distance"])) for h in found[0]]


def _to_entity(row: VectorRow) -> dict[str, Any]:
    return {
        "id": row.vector_id,
        "vector": np.asarray(row.vector, dtype=np.float32).tolist(),
        "object_id": row.object_id,
        "version": row.version,
        "text": row.text[:MAX_TEXT],
        "chunk_index": row.chunk_index,
        "shard": row.shard,
        "char_start": row.char_start,
        "char_end": row.char_end,
        "page": row.page,
        "event_time_ms": row.event_time_ms,
        "indexed_at_ms": row.indexed_at_ms,
        "has_text": row.has_text,
        "has_image": row.has_image,
    }


def _to_row(entity: dict[str, Any], vid: str | None) -> VectorRow:
    vector = np.asarray(entity.get("vector", []), dtype=np.float32)
    return VectorRow(
        vector_id=vid or entity["id"],
        object_id=entity["object_id"],
        version=entity["version"],
        chunk_index=int(entity["chunk_index"]),
        shard=int(entity["shard"]),
        vector=vector,
        text=entity["text"],
        char_start=int(entity["char_start"]),
        char_end=int(entity["char_end"]),
        page=int(entity["page"]),
        has_text=bool(entity["has_text"]),
        has_image=bool(entity["has_image"]),
        event_time_ms=int(entity["event_time_ms"]),
        indexed_at_ms=int(entity["indexed_at_ms"]),
    )
