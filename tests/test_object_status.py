"""How GetObjectStatus resolves an object from its newest objects.v1 record, index status and dead letters."""

from __future__ import annotations

import pytest

from mmrag.dlq import REPLAY_FIRST_FAILURE_MS, REPLAY_PRIOR_ATTEMPTS, Origin, dead_letter, failed_version
from mmrag.errors import PermanentError
from mmrag.pb.events_pb2 import EmbeddingBatch, IndexState, IndexStatus
from query_service.object_status import Failure, ObjectRecord, ObjectSeen, resolve

pytestmark = pytest.mark.unit

OID = "bucket/docs/a.md"


def seen(version: str, live: bool = True, rejected: str = "", written_ms: int = 1_000) -> ObjectSeen:
    return ObjectSeen(
        version=version, live=live, rejected=rejected, event_time_ms=written_ms - 50, written_ms=written_ms
    )


def status(version: str, state: int, indexed_at_ms: int) -> IndexStatus:
    return IndexStatus(
        object_id=OID, version=version, state=state, space_id="abc", event_time_ms=950, indexed_at_ms=indexed_at_ms
    )


def failure(version: str | None, failed_ms: int, stage: str = "text_embedder", offset: int = 7) -> Failure:
    return Failure(
        version, stage, "PermanentError", f"[{stage}] {OID}: not a readable PDF", "re-export", failed_ms, offset
    )


def test_pending_until_the_version_is_indexed_then_indexed_with_freshness() -> None:
    record = ObjectRecord(seen=seen("v1"))
    pending = resolve(OID, record, now_ms=3_000)
    assert (pending.state, pending.version) == ("pending", "v1")
    assert "2.0s ago" in pending.detail
    record.status = status("v1", IndexState.INDEX_STATE_INDEXED, 1_450)
    indexed = resolve(OID, record, now_ms=3_000)
    assert (indexed.state, indexed.version, indexed.space_id) == ("indexed", "v1", "abc")
    assert indexed.freshness_ms == 500 and indexed.indexed_at_ms == 1_450


def test_an_old_versions_status_leaves_the_new_version_pending() -> None:
    record = ObjectRecord(seen=seen("v2", written_ms=5_000), status=status("v1", IndexState.INDEX_STATE_INDEXED, 1_450))
    assert resolve(OID, record, now_ms=6_000).state == "pending"


def test_failure_of_the_current_version_names_the_dead_letter() -> None:
    record = ObjectRecord(seen=seen("v1"), failures=[failure("v1", 1_200)])
    got = resolve(OID, record, now_ms=2_000)
    assert (got.state, got.failed_stage, got.error_class, got.dlq_offset) == (
        "failed",
        "text_embedder",
        "PermanentError",
        7,
    )
    assert "not a readable PDF" in got.detail and got.fix == "re-export"


def test_an_old_versions_failure_is_not_the_current_state() -> None:
    record = ObjectRecord(seen=seen("v2", written_ms=5_000), failures=[failure("v1", 1_200)])
    record.status = status("v2", IndexState.INDEX_STATE_INDEXED, 5_300)
    assert resolve(OID, record, now_ms=6_000).state == "indexed"
    record.status = None
    assert resolve(OID, record, now_ms=6_000).state == "pending"


def test_indexed_after_the_failure_means_a_replay_went_through() -> None:
    record = ObjectRecord(seen=seen("v1"), failures=[failure("v1", 1_200)])
    record.status = status("v1", IndexState.INDEX_STATE_INDEXED, 9_000)
    assert resolve(OID, record, now_ms=10_000).state == "indexed"


def test_version_less_failure_counts_only_when_newer_than_the_current_record() -> None:
    refused = failure(None, 4_000, stage="normalizer")
    assert resolve(OID, ObjectRecord(failures=[refused]), now_ms=5_000).state == "failed"
    replayed_later = ObjectRecord(seen=seen("v1", written_ms=9_000), failures=[refused])
    assert resolve(OID, replayed_later, now_ms=9_500).state == "pending"
    refused_after = ObjectRecord(seen=seen("v0", written_ms=1_000), failures=[refused])
    assert resolve(OID, refused_after, now_ms=5_000).state == "failed"


def test_tombstones_rejected_deleted_and_delete_in_flight() -> None:
    rejected = ObjectRecord(seen=seen("v1", live=False, rejected="unsupported content type: zip"))
    got = resolve(OID, rejected, now_ms=2_000)
    assert (got.state, got.detail) == ("failed", "unsupported content type: zip")
    in_flight = ObjectRecord(seen=seen("v1", live=False), status=status("v1", IndexState.INDEX_STATE_INDEXED, 500))
    assert resolve(OID, in_flight, now_ms=2_000).state == "pending"
    in_flight.status = status("v1", IndexState.INDEX_STATE_DELETED, 1_100)
    assert resolve(OID, in_flight, now_ms=2_000).state == "deleted"


def test_a_version_removed_by_the_ttl_job_is_expired() -> None:
    record = ObjectRecord(seen=seen("v1"), status=status("v1", IndexState.INDEX_STATE_EXPIRED, 9_000))
    assert resolve(OID, record, now_ms=10_000).state == "expired"


def test_unknown_object_is_none() -> None:
    assert resolve(OID, ObjectRecord(), now_ms=1) is None


def test_failed_version_from_header_or_the_failed_message() -> None:
    assert failed_version(b"", {"version": "v9"}) == "v9"
    batch = EmbeddingBatch(object_id=OID, version="v3").SerializeToString()
    assert failed_version(batch, {"schema": "mmrag.v1.EmbeddingBatch"}) == "v3"
    assert failed_version(b'{"Records": []}', {"source": "sqs"}) is None


def test_a_replayed_input_that_fails_again_carries_its_attempts_on() -> None:
    error = PermanentError("normalizer", OID, "bucket not allowed", "add it to MMRAG_ALLOWED_BUCKETS")
    replayed = {REPLAY_PRIOR_ATTEMPTS: "3", REPLAY_FIRST_FAILURE_MS: "1234", "source": "sqs"}
    out = dead_letter("dlq.v1", OID, b"{}", replayed, stage="normalizer", error=error, origin=Origin("s3-events.v1"))
    assert out.headers["dlq-attempts"] == "4"
    assert out.headers["dlq-first-failure-ms"] == "1234" and out.headers["source"] == "sqs"
    first = dead_letter("dlq.v1", OID, b"{}", {}, stage="normalizer", error=error, origin=Origin("s3-events.v1"))
    assert first.headers["dlq-attempts"] == "1"
