"""Row manifests of the Milvus adapter (issue 20) against the session's milvus-lite server: ``rows_of`` by primary
key gives what a scan of ``object_id`` gives after upserts, overwrites with fewer chunks, deletes and a crash
between any two writes of an update, with no row left outside its object's manifest; collections made before
manifests are scanned for the objects they do not list yet."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pymilvus import MilvusClient

from mmrag import milvus_manifest
from mmrag.milvus_index import MilvusIndex, milvus_client
from mmrag.milvus_manifest import COMPLETE_PROPERTY, manifest_collection, manifest_key
from mmrag.vector_index import VectorRow

pytestmark = pytest.mark.kafka  # uses the session infrastructure (milvus-lite server)


class CrashError(Exception):
    """The process dies here."""


class CrashingIndex(MilvusIndex):
    """Dies before the first request named ``crash_at`` (then runs normally again, as a restarted updater)."""

    crash_at: str | None = None

    def _call(self, what: str, subject: str, request: Callable[[MilvusClient], Any]) -> Any:
        if what == self.crash_at:
            self.crash_at = None
            raise CrashError(what)
        return super()._call(what, subject, request)


def rows(oid: str, version: str, chunks: int) -> list[VectorRow]:
    rng = np.random.default_rng(int(hashlib.sha256(f"{oid}\x1f{version}".encode()).hexdigest()[:8], 16))
    return [
        VectorRow(
            vector_id=hashlib.sha256(f"{oid}\x1f{version}\x1f{n}".encode()).hexdigest()[:32],
            object_id=oid,
            version=version,
            chunk_index=n,
            shard=0,
            vector=rng.standard_normal(4).astype(np.float32),
            text=f"{oid} {version} chunk {n}",
            has_text=True,
        )
        for n in range(chunks)
    ]


def apply(index: MilvusIndex, new: list[VectorRow], oid: str) -> None:
    """What the updater does per object: read its rows, upsert the new ones, delete the rest."""
    keep = {r.vector_id for r in new}
    existing = index.rows_of(oid)
    index.upsert(new)
    index.delete([r.vector_id for r in existing if r.vector_id not in keep])


def ids(found: list[VectorRow]) -> set[str]:
    return {r.vector_id for r in found}


def assert_consistent(index: MilvusIndex, oid: str, expected: list[VectorRow]) -> None:
    """rows_of equals the scan and the expected rows; the manifest lists exactly the rows (no orphan either way)."""
    scanned = index._scan_rows(oid)
    assert ids(scanned) == ids(expected)
    assert ids(index.rows_of(oid)) == ids(expected)
    assert sorted(r.text for r in index.rows_of(oid)) == sorted(r.text for r in expected)
    manifest = index._manifests.read([oid]).get(oid)
    assert (manifest.vector_ids if manifest else frozenset()) == ids(expected)


@pytest.fixture
def index(infra, unique: str) -> CrashingIndex:  # type: ignore[no-untyped-def]
    made = CrashingIndex(infra.milvus_uri, f"m{unique}", 4)
    made.start()
    return made


def test_rows_of_by_manifest_equals_the_scan(index: CrashingIndex) -> None:
    assert index._complete  # made with manifests: an object without one is not scanned
    a1, b1 = rows("b/a", "v1", 3), rows("b/b 'x'\t\\", "v1", 2)
    apply(index, a1, "b/a")
    apply(index, b1, "b/b 'x'\t\\")
    apply(index, a1, "b/a")  # replay
    assert_consistent(index, "b/a", a1)
    assert_consistent(index, "b/b 'x'\t\\", b1)
    np.testing.assert_allclose(index.rows_of("b/a")[1].vector, a1[1].vector)
    assert [r.chunk_index for r in index.rows_of("b/a")] == [0, 1, 2]

    a2 = rows("b/a", "v2", 1)  # overwrite with fewer chunks
    apply(index, a2, "b/a")
    assert_consistent(index, "b/a", a2)
    index.delete([r.vector_id for r in a2])  # the object deleted
    assert_consistent(index, "b/a", [])
    assert index._manifests.read(["b/a"]) == {}
    assert index.rows_of("b/never") == []
    assert_consistent(index, "b/b 'x'\t\\", b1)  # untouched by the others


@pytest.mark.parametrize("crash_at", ["manifest upsert", "upsert", "get", "delete", "manifest get"])
def test_a_crash_between_the_writes_leaves_no_orphan_row(index: CrashingIndex, crash_at: str) -> None:
    old, new = rows("b/c", "v1", 4), rows("b/c", "v2", 2)
    apply(index, old, "b/c")
    if crash_at == "manifest get":  # the manifest read after the rows' delete (rows_of's own read is before)
        existing = index.rows_of("b/c")
        index.upsert(new)
        index.crash_at = crash_at
        with pytest.raises(CrashError):
            index.delete([r.vector_id for r in existing])
    else:
        index.crash_at = crash_at
        with pytest.raises(CrashError):
            apply(index, new, "b/c")
    scanned = ids(index._scan_rows("b/c"))
    manifest = index._manifests.read(["b/c"])["b/c"]
    assert scanned <= manifest.vector_ids  # every row the crash left is listed: a replay finds it
    apply(index, new, "b/c")  # the replay after the restart
    assert_consistent(index, "b/c", new)


def test_a_manifest_spans_pages(index: CrashingIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(milvus_manifest, "IDS_PER_PAGE", 2)
    many, few = rows("b/d", "v1", 5), rows("b/d", "v2", 1)
    apply(index, many, "b/d")
    assert index._manifests.read(["b/d"])["b/d"].pages == 3
    assert_consistent(index, "b/d", many)
    apply(index, few, "b/d")
    assert_consistent(index, "b/d", few)
    keys = [manifest_key("b/d", p) for p in range(3)]
    assert [e["id"] for e in index.client.get(index._manifests.collection, ids=keys)] == keys[:1]


def test_a_collection_made_before_manifests_is_scanned_until_listed(
    infra, unique: str, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    first = MilvusIndex(infra.milvus_uri, f"old{unique}", 4)
    first.start()
    old = rows("b/e", "v1", 3)
    first.upsert(old)
    client = milvus_client(infra.milvus_uri)
    client.drop_collection(manifest_collection(first.collection))  # as made before manifests
    client.alter_collection_properties(first.collection, {COMPLETE_PROPERTY: "false"})
    client.close()

    later = MilvusIndex(infra.milvus_uri, f"old{unique}", 4)
    with caplog.at_level(logging.WARNING):
        later.start()
    assert "before row manifests" in caplog.text and "mmrag reindex" in caplog.text
    assert later._manifests.read(["b/e"]) == {}
    assert ids(later.rows_of("b/e")) == ids(old)  # by the scan, which lists them
    assert later._manifests.read(["b/e"])["b/e"].vector_ids == ids(old)
    new = rows("b/e", "v2", 1)
    apply(later, new, "b/e")
    assert_consistent(later, "b/e", new)
    assert later.rows_of("b/unseen") == []  # scanned: nothing
    assert later._manifests.read(["b/unseen"])["b/unseen"].vector_ids == frozenset()  # known empty: no more scans
