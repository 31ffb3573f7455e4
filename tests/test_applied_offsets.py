"""Which Faiss replicas the index updater's statuses wait for (mmrag/applied_offsets.py), without a broker: the
marks as the follower would have read them. A replica is waited for while it serves and was heard from within the
max age; one that went silent (kill -9) stops holding statuses after it; a tombstone drops it at once."""

from __future__ import annotations

import time

import pytest

from mmrag.applied_offsets import AppliedMark, AppliedOffsets
from mmrag.errors import RetryableError

pytestmark = pytest.mark.unit


def follower(marks: list[tuple[AppliedMark, float]], max_age_s: float = 5.0) -> AppliedOffsets:
    """A follower that has read ``marks`` (each with how many seconds ago) and the topic's end."""
    applied = AppliedOffsets("127.0.0.1:1", "vectors.applied.v1", max_age_s, "index_updater")
    now = time.monotonic()
    applied._loading = set()
    applied._marks = {mark.replica: (mark, now - age) for mark, age in marks}
    return applied


def test_a_mark_round_trips_and_garbage_is_refused() -> None:
    mark = AppliedMark("pod-a.1.shard-0", 0, 1234, True, 99)
    assert AppliedMark.decode(mark.encode()) == mark
    with pytest.raises(ValueError, match="not an applied mark"):
        AppliedMark.decode(b'{"replica": "x"}')


def test_serving_fresh_replicas_of_the_named_shards_are_waited_for() -> None:
    applied = follower(
        [
            (AppliedMark("a", 0, 10, True), 0.1),  # serving shard 0, behind
            (AppliedMark("b", 0, 50, True), 0.1),  # serving shard 0, past the target
            (AppliedMark("c", 0, 3, False), 0.1),  # still catching up: not serving, not waited for
            (AppliedMark("d", 0, 3, True), 9.0),  # silent for longer than the max age (killed): not waited for
            (AppliedMark("e", 1, 0, True), 0.1),  # another shard, not named
        ]
    )
    assert applied.behind({0: 40}) == ["a (shard 0 at 10 < 40)"]
    assert applied.behind({0: 10}) == []
    assert applied.behind({1: 1}) == ["e (shard 1 at 0 < 1)"]
    assert applied.behind({}) == []


def test_a_follower_still_reading_the_topic_holds_everything() -> None:
    applied = follower([])
    applied._loading = {0}
    assert applied.behind({0: 1}) == ["loading"]


def test_a_wait_past_its_limit_names_the_late_replica() -> None:
    applied = follower([(AppliedMark("pod-a", 0, 10, True), 0.0)])
    with pytest.raises(RetryableError, match="pod-a .shard 0 at 10 < 11."):
        applied.wait({0: 11}, timeout_s=0.2)
    applied.wait({0: 10}, timeout_s=0.2)  # returns at once: applied up to the target
