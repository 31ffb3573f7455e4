"""Identities and the joint vector layout."""

from __future__ import annotations

import numpy as np
import pytest

from mmrag.ids import content_version, object_id, shard_for, split_object_id, vector_id
from mmrag.space import EmbeddingSpace

pytestmark = pytest.mark.unit

SPACE = EmbeddingSpace("text@1", 4, "clip@1", 3, 0.5, 0.5)


def test_vector_id_is_stable_and_depends_on_every_part() -> None:
    base = vector_id("b/k", "v1", "chunk-0", "s1")
    assert base == vector_id("b/k", "v1", "chunk-0", "s1")
    assert len(base) == 32 and int(base, 16) >= 0
    others = {
        vector_id("b/k2", "v1", "chunk-0", "s1"),
        vector_id("b/k", "v2", "chunk-0", "s1"),
        vector_id("b/k", "v1", "chunk-1", "s1"),
        vector_id("b/k", "v1", "chunk-0", "s2"),
    }
    assert base not in others and len(others) == 4
    # field boundaries are unambiguous: moving a character between parts changes the id
    assert vector_id("b/ka", "v", "c", "s") != vector_id("b/k", "av", "c", "s")


def test_shards_are_stable_spread_and_validated() -> None:
    ids = [object_id("bucket", f"key-{i}") for i in range(1000)]
    shards = [shard_for(oid, 4) for oid in ids]
    assert shards == [shard_for(oid, 4) for oid in ids]
    counts = np.bincount(shards, minlength=4)
    assert counts.min() > 200, counts
    assert shard_for("bucket/key-0", 4) == 2  # xxh64: the same on every machine and Python run
    with pytest.raises(ValueError):
        shard_for("b/k", 0)


def test_object_ids_and_content_versions() -> None:
    assert object_id("b", "a/b c+d.txt") == "b/a/b c+d.txt"
    assert split_object_id("b/a/b c.txt") == ("b", "a/b c.txt")
    with pytest.raises(ValueError):
        split_object_id("nobucket")
    assert content_version(b"x") == content_version(b"x") != content_version(b"y")


def test_fuse_weights_each_normalized_half_and_zeros_a_missing_one() -> None:
    joint = SPACE.fuse(np.array([3.0, 0, 0, 4.0]), None)
    assert joint.shape == (7,)
    np.testing.assert_allclose(joint, [0.3, 0, 0, 0.4, 0, 0, 0], atol=1e-6)
    both = SPACE.fuse(np.array([1.0, 0, 0, 0]), np.array([0, 2.0, 0]))
    query = SPACE.fuse(np.array([1.0, 0, 0, 0]), np.array([0, 1.0, 0]))
    assert float(both @ query) == pytest.approx(0.5)  # 0.25 * cos_text + 0.25 * cos_clip
    np.testing.assert_allclose(SPACE.clip_half(both), [0, 1.0, 0])
    np.testing.assert_allclose(SPACE.text_half(both), [1.0, 0, 0, 0])
    assert SPACE.clip_half(joint) is None
    with pytest.raises(ValueError, match="expects 3"):
        SPACE.fuse(None, np.ones(5))


def test_space_id_changes_with_models_and_weights() -> None:
    assert SPACE.id == EmbeddingSpace("text@1", 4, "clip@1", 3, 0.5, 0.5).id
    assert SPACE.id != EmbeddingSpace("text@1", 4, "clip@2", 3, 0.5, 0.5).id
    assert SPACE.id != EmbeddingSpace("text@1", 4, "clip@1", 3, 0.6, 0.4).id
