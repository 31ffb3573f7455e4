"""Per-object row manifests of a Milvus collection (issue 20): which vector ids an object's rows have, kept in a
second small collection under primary keys derived from the object id.

Why: the updater reads an object's rows before every change. A filter ``object_id == ...`` scans the collection
(milvus-lite: 13 / 37 / 172 ms at 2k / 20k / 60k rows, worse with an INVERTED index on object_id), while a
primary-key get stays at ~1 ms at every size. So an object's rows are two primary-key gets: its manifest, then its
rows by id. The manifest collection is named ``objects_of_<collection>``, outside ``<prefix>_<space id>``, so the
space catalog never takes it for a space. Milvus needs a vector field in every collection: a constant 2-d one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymilvus import DataType, MilvusClient

PREFIX = "objects_of_"
COMPLETE_PROPERTY = "mmrag.rows_manifest"  # on a rows collection made with its manifest: every object has one
IDS_MAX_BYTES = 65535  # Milvus' VARCHAR limit
IDS_PER_PAGE = 1900  # 32 hex digits and a space each: 62,700 bytes; more rows (MMRAG_MAX_CHUNKS 2000) take pages
_DUMMY = [1.0, 0.0]  # Milvus requires a vector field; nobody searches it


def manifest_collection(collection: str) -> str:
    return PREFIX + collection


def manifest_key(object_id: str, page: int) -> str:
    """Primary key of page ``page`` of ``object_id``'s manifest: first 16 bytes (hex) of sha256 over the object id
    and the page (``\\x1f``-separated like ``mmrag.ids.vector_id``), so a get needs no scan."""
    material = "\x1f".join((object_id, f"manifest-{page}")).encode()
    return hashlib.sha256(material).digest()[:16].hex()


@dataclass(frozen=True)
class Manifest:
    vector_ids: frozenset[str]
    pages: int  # how many pages it is stored in (a rewrite deletes the pages it no longer needs)


Call = Callable[[str, str, Callable[[MilvusClient], Any]], Any]


class RowManifests:
    """The manifests of one rows collection. ``call`` runs a request with the adapter's error handling."""

    def __init__(self, rows_collection: str, call: Call, timeout_s: float, consistency: str) -> None:
        self.collection = manifest_collection(rows_collection)
        self._call = call
        self.timeout_s = timeout_s
        self.consistency = consistency

    def create(self, client: MilvusClient) -> None:
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=32)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=len(_DUMMY))
        schema.add_field("object_id", DataType.VARCHAR, max_length=2048)
        schema.add_field("pages", DataType.INT64)
        schema.add_field("vector_ids", DataType.VARCHAR, max_length=IDS_MAX_BYTES)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="L2")
        client.create_collection(self.collection, schema=schema, index_params=index)

    def read(self, object_ids: Iterable[str]) -> dict[str, Manifest]:
        """The manifests of ``object_ids`` (absent: none kept), by one primary-key get (two when one spans pages)."""
        wanted = {manifest_key(o, 0): o for o in object_ids}
        if not wanted:
            return {}
        heads = [e for e in self._get(wanted) if wanted.get(e["id"]) == e["object_id"]]
        more = {manifest_key(e["object_id"], p): e["object_id"] for e in heads for p in range(1, int(e["pages"]))}
        ids: dict[str, set[str]] = {e["object_id"]: set(e["vector_ids"].split()) for e in heads}
        for e in self._get(more) if more else []:
            if more.get(e["id"]) == e["object_id"]:
                ids[e["object_id"]].update(e["vector_ids"].split())
        return {e["object_id"]: Manifest(frozenset(ids[e["object_id"]]), int(e["pages"])) for e in heads}

    def write(self, changes: Mapping[str, tuple[Iterable[str], int]], keep_empty: bool = False) -> None:
        """Makes each object's ids its manifest (``changes``: object id -> (vector ids, pages of the manifest
        before)) in one upsert, and deletes the pages no longer needed (an empty manifest is deleted, unless
        ``keep_empty``: a known object without rows)."""
        entities: list[dict[str, Any]] = []
        stale: list[str] = []
        for object_id, (vector_ids, pages_before) in changes.items():
            pages = _pages(object_id, sorted(vector_ids), keep_empty)
            entities.extend(pages)
            stale.extend(manifest_key(object_id, p) for p in range(len(pages), pages_before))
        subject = ", ".join(sorted(changes)[:3]) + (" ..." if len(changes) > 3 else "")
        if entities:
            self._call(
                "manifest upsert", subject, lambda c: c.upsert(self.collection, entities, timeout=self.timeout_s)
            )
        if stale:
            self._call(
                "manifest delete", subject, lambda c: c.delete(self.collection, ids=stale, timeout=self.timeout_s)
            )

    def _get(self, keys: Mapping[str, str]) -> list[dict[str, Any]]:
        """The manifest pages of ``keys`` (key -> object id); a failure names the objects, as every error does."""
        objects = sorted(set(keys.values()))
        subject = ", ".join(objects[:3]) + (" ..." if len(objects) > 3 else "")
        found = self._call(
            "manifest get",
            subject,
            lambda c: c.get(
                self.collection,
                ids=list(keys),
                output_fields=["id", "object_id", "pages", "vector_ids"],
                consistency_level=self.consistency,
                timeout=self.timeout_s,
            ),
        )
        return list(found)


def _pages(object_id: str, ordered: list[str], keep_empty: bool) -> list[dict[str, Any]]:
    chunks = [ordered[i : i + IDS_PER_PAGE] for i in range(0, len(ordered), IDS_PER_PAGE)]
    if not chunks and keep_empty:
        chunks = [[]]
    return [
        {
            "id": manifest_key(object_id, p),
            "vector": _DUMMY,
            "object_id": object_id,
            "pages": len(chunks),
            "vector_ids": " ".join(chunk),
        }
        for p, chunk in enumerate(chunks)
    ]
