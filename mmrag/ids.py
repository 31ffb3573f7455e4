"""Stable identities: object ids, versions, vector ids and shards, derived from names and content only."""

from __future__ import annotations

import hashlib

import xxhash


def object_id(bucket: str, key: str) -> str:
    """The object's identity across versions: ``bucket/key`` with the key URL-decoded."""
    return f"{bucket}/{key}"


def split_object_id(oid: str) -> tuple[str, str]:
    """Inverse of :func:`object_id`; raises ValueError when there is no bucket part."""
    bucket, sep, key = oid.partition("/")
    if not sep or not bucket or not key:
        raise ValueError(f"object id {oid!r} is not 'bucket/key'")
    return bucket, key


def content_version(data: bytes) -> str:
    """The version of an object that carries no versionId/etag/sequencer: sha256 of its bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def vector_id(oid: str, version: str, part: str, space_id: str) -> str:
    """First 16 bytes (hex) of sha256 over the object, version, part (e.g. ``chunk-3``) and space; never the vector."""
    material = "\x1f".join((oid, version, part, space_id)).encode()
    return hashlib.sha256(material).digest()[:16].hex()


def shard_for(oid: str, shards: int) -> int:
    """Stable shard of an object (xxh64 of the id, mod shards); all chunks of an object share it."""
    if shards < 1:
        raise ValueError(f"shard count must be >= 1, got {shards}")
    return xxhash.xxh64_intdigest(oid.encode()) % shards
