"""Every key S3 allows works: in Milvus filters (the adapter), in object reads (the store) and end to end through
the real pipeline (S3 -> SQS -> normalizer -> text embedder -> updater -> Milvus, then deletes). Also: Milvus errors
classified at the adapter (the item's fault -> PermanentError, Milvus away -> RetryableError) and a restarted
milvus-lite served again by the same MilvusIndex (collection reloaded, connection made again)."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from pymilvus.exceptions import DataTypeNotMatchException, MilvusException, ParamError

from local_stack.stack import Deployment, Endpoints
from mmrag.errors import PermanentError, RetryableError
from mmrag.milvus_index import TEXT_MAX_BYTES, Fault, MilvusIndex, classify, fit_utf8
from mmrag.object_store import S3ObjectStore, obstore_reads_exactly, s3_client
from mmrag.pb.events_pb2 import IndexState, IndexStatus
from mmrag.vector_index import VectorRow
from tests.kafka_tools import read_topic, wait_for

AWKWARD_KEYS = [
    "ünïcödé/straße.txt",
    "emoji/😀 party 🎉.txt",
    'quotes/say "hi".txt',
    "quotes/it's.txt",
    "back\\slash\\.txt",
    "percent/100%.txt",
    "percent/%41%2F%zz.txt",  # looks URL-encoded, is not
    "plus/a+b.txt",
    "spaces/a b  c .txt",
    "double//slash.txt",
    "./dot.txt",
    "../dotdot.txt",
    "tab/a\tb.txt",
    "/leading-slash.txt",
    'inject/" || object_id != "',  # a filter built by string pasting would match every object
    "long/" + "ü" * 500 + ".txt",  # 1009 bytes of UTF-8: near S3's 1024-byte limit
]


def row(vid: str, oid: str, chunk: int, vec: list[float], text: str = "") -> VectorRow:
    return VectorRow(
        vector_id=vid,
        object_id=oid,
        version="v1",
        chunk_index=chunk,
        shard=0,
        vector=np.asarray(vec, dtype=np.float32),
        text=text or f"chunk {chunk} of {oid}",
        has_text=True,
    )


@pytest.mark.unit
def test_classification_by_class_and_code() -> None:
    assert classify(ParamError(message="bad")) is Fault.ITEM
    assert classify(DataTypeNotMatchException(message="bad")) is Fault.ITEM
    assert classify(MilvusException(1100, "invalid parameter")) is Fault.ITEM  # Milvus' ErrParameterInvalid
    assert classify(MilvusException(1, "x", 5)) is Fault.ITEM  # legacy IllegalArgument
    assert classify(MilvusException(6, "VARCHAR too long", 6)) is Fault.ITEM  # milvus-lite's argument errors
    assert classify(MilvusException(1, "unexpected", is_input_error=True)) is Fault.ITEM
    assert classify(MilvusException(101, "collection not loaded")) is Fault.NOT_LOADED
    assert classify(MilvusException(2, "Fail connecting to server")) is Fault.CONNECTION
    assert classify(MilvusException(grpc.StatusCode.DEADLINE_EXCEEDED, "timeout")) is Fault.CONNECTION
    # a missing collection or failed authentication is the deployment's problem, even when marked as input
    assert classify(MilvusException(100, "collection not found", is_input_error=True)) is Fault.MILVUS
    assert classify(MilvusException(1401, "privilege not permitted", is_input_error=True)) is Fault.MILVUS
    assert classify(MilvusException(65535, "unexpected")) is Fault.MILVUS
    assert classify(MilvusException(8, "rate limit exceeded", retriable=True)) is Fault.MILVUS


@pytest.mark.unit
def test_text_fits_the_varchar_limit_in_utf8_bytes() -> None:
    assert fit_utf8("abc", 5) == "abc"
    assert fit_utf8("ü" * 10, 5) == "üü"  # never half a character
    assert fit_utf8("a😀b", 4) == "a" and fit_utf8("a😀b", 5) == "a😀"
    long = "ü" * 40000 + "x"
    assert fit_utf8(long, TEXT_MAX_BYTES) == "ü" * (TEXT_MAX_BYTES // 2)


@pytest.mark.unit
def test_obstore_is_used_only_for_keys_it_addresses_exactly() -> None:
    exact = ["a.txt", "ü/😀.txt", "q\"s'", "a\\b", "100%", "a+b c", "a?b#c", "k" * 1000]
    assert [k for k in exact if not obstore_reads_exactly(k)] == []
    raw_only = ["a//b", "./x", "../x", "x/./y", "a\tb", "/lead", "dir/", "a\x01b", "a\x7fb"]
    assert [k for k in raw_only if obstore_reads_exactly(k)] == []


@pytest.mark.kafka
def test_index_filters_match_each_awkward_object_exactly(infra: Endpoints, unique: str) -> None:
    index = MilvusIndex(infra.milvus_uri, f"keys{unique}", 4)
    index.start()
    oids = [f"bucket-{unique}/{k}" for k in AWKWARD_KEYS] + [f"bucket-{unique}/ü", f"bucket-{unique}/u"]
    ids = {oid: [f"{n:03d}a", f"{n:03d}b"] for n, oid in enumerate(oids)}
    for oid in oids:
        index.upsert([row(ids[oid][0], oid, 0, [1, 0, 0, 0]), row(ids[oid][1], oid, 1, [0, 1, 0, 0])])

    for oid in oids:
        found = index.rows_of(oid)
        assert sorted(r.vector_id for r in found) == ids[oid], repr(oid)
        assert {r.object_id for r in found} == {oid} and {r.text for r in found} == {
            f"chunk 0 of {oid}",
            f"chunk 1 of {oid}",
        }
    hits = index.search(np.array([1, 0, 0, 0]), len(oids) * 2, shard=0)
    assert sorted(h.row.object_id for h in hits if h.row.chunk_index == 0) == sorted(oids)  # payload round-trips

    for n, oid in enumerate(oids):
        index.delete([r.vector_id for r in index.rows_of(oid)])
        assert index.rows_of(oid) == [], repr(oid)
        assert all(len(index.rows_of(other)) == 2 for other in oids[n + 1 :]), f"deleting {oid!r} took others"
    assert index.count() == 0


@pytest.mark.kafka
def test_text_longer_than_the_varchar_limit_is_stored_truncated(infra: Endpoints, unique: str) -> None:
    index = MilvusIndex(infra.milvus_uri, f"long{unique}", 4)
    index.start()
    index.upsert([row("long", "b/long", 0, [1, 0, 0, 0], text="ü" * 70000)])  # 140,000 bytes
    assert [r.text for r in index.rows_of("b/long")] == ["ü" * (TEXT_MAX_BYTES // 2)]


@pytest.mark.kafka
def test_item_faults_are_permanent_and_unreachable_milvus_is_retryable(infra: Endpoints, unique: str) -> None:
    from local_stack.processes import free_port

    index = MilvusIndex(infra.milvus_uri, f"faults{unique}", 4)
    index.start()
    good = row("good", "b/good", 0, [1, 0, 0, 0])
    bad_rows = {
        "b/wrong-dim": row("wrongdim", "b/wrong-dim", 0, [1, 0, 0]),
        "b/long-version": VectorRow("longver", "b/long-version", "v" * 600, 0, 0, np.ones(4, np.float32)),
        "b/long-id": row("x" * 40, "b/long-id", 0, [1, 0, 0, 0]),
    }
    for oid, bad in bad_rows.items():
        with pytest.raises(PermanentError) as caught:
            index.upsert([bad])
        assert caught.value.subject == oid and caught.value.stage == "milvus", str(caught.value)
        assert f"faults{unique}" in caught.value.problem
    index.upsert([good])  # the bad items did not break the index for the next one
    assert [r.vector_id for r in index.rows_of("b/good")] == ["good"]

    closed = MilvusIndex(f"http://127.0.0.1:{free_port()}", f"faults{unique}", 4, timeout_s=2)
    with pytest.raises(RetryableError, match="cannot open collection"):
        closed.start()
    with pytest.raises(RetryableError) as unreachable:
        closed.upsert([good])
    assert unreachable.value.subject == "b/good" and "check Milvus health" in unreachable.value.fix
    with pytest.raises(RetryableError):
        closed.rows_of("b/good")
    with pytest.raises(RetryableError):
        closed.search(np.array([1, 0, 0, 0]), 3, shard=0)


@pytest.mark.kafka
def test_same_index_serves_again_after_milvus_lite_restarts(tmp_path: Path, unique: str) -> None:
    """A private milvus-lite (the session's stays up): after its restart the collection is back `released` and
    the old connection is dead; the same MilvusIndex loads and reconnects by itself on its next calls."""
    from local_stack.milvus import start_milvus_lite, stop_milvus_lite
    from local_stack.processes import free_port

    port = free_port()
    uri = start_milvus_lite(tmp_path, port)
    try:
        index = MilvusIndex(uri, f"restart{unique}", 4)
        index.start()
        index.upsert([row("before", 'b/ü "x"', 0, [1, 0, 0, 0])])
        stop_milvus_lite(tmp_path)
        with pytest.raises(RetryableError):
            index.upsert([row("during", 'b/ü "x"', 1, [0, 1, 0, 0])])
        with pytest.raises(RetryableError):
            index.search(np.array([1, 0, 0, 0]), 3)

        start_milvus_lite(tmp_path, port)
        assert [h.row.vector_id for h in index.search(np.array([1, 0, 0, 0]), 3)] == ["before"]
        index.upsert([row("after", 'b/ü "x"', 1, [0, 1, 0, 0])])
        assert sorted(r.vector_id for r in index.rows_of('b/ü "x"')) == ["after", "before"]
    finally:
        stop_milvus_lite(tmp_path)


@pytest.mark.kafka
def test_object_store_round_trips_every_awkward_key(deployment: Deployment) -> None:
    store = S3ObjectStore(deployment.s3_settings(), "test")
    bucket = f"{deployment.bucket}-raw"
    s3_client(deployment.s3_settings()).create_bucket(Bucket=bucket)
    bodies = {key: f"body of {key!r}".encode() for key in AWKWARD_KEYS}
    bodies |= {"same.txt": b"without the slash", "dir": b"no trailing slash", "dir/": b"with a trailing slash"}
    for key, body in bodies.items():
        store.put(bucket, key, body)
    assert {key: store.get(bucket, key) for key in bodies} == bodies
    assert {key: store.read_prefix(bucket, key, 7) for key in bodies} == {k: b[:7] for k, b in bodies.items()}


@pytest.mark.kafka
def test_listings_and_change_records_keep_every_awkward_key(deployment: Deployment) -> None:
    """The backfill's and the watch's ListObjectsV2 listings give the raw keys, and a listed change survives the
    canonical record on s3-events.v1 (URL-encoded, then decoded by the normalizer) unchanged."""
    from producers.backfill import listed_change
    from producers.s3_events import parse_notification
    from producers.watch import bucket_etags

    client = s3_client(deployment.s3_settings())
    bucket = f"{deployment.bucket}-list"
    client.create_bucket(Bucket=bucket)
    for key in AWKWARD_KEYS:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert sorted(bucket_etags(client, bucket, "")) == sorted(AWKWARD_KEYS)
    listed = client.list_objects_v2(Bucket=bucket)["Contents"]
    changes = [parse_notification(listed_change(bucket, obj).to_body(), "test")[0] for obj in listed]
    assert sorted(c.object_id for c in changes) == sorted(f"{bucket}/{key}" for key in AWKWARD_KEYS)


def in_state(bootstrap: str, topic: str, bucket: str, state: int) -> set[str]:
    """Objects of ``bucket`` whose latest index status is ``state``."""
    latest = {}
    for m in read_topic(bootstrap, topic, idle_s=1.0):
        if m.key is not None and m.key.startswith(f"{bucket}/"):
            status = IndexStatus()
            status.ParseFromString(m.value or b"")
            latest[m.key] = status.state
    return {oid for oid, s in latest.items() if s == state}


def deployment_index(deployment: Deployment) -> MilvusIndex:
    """The index the deployment's updater writes (its space's collection), opened like the services open it."""
    from mmrag.settings import SpaceSettings, VectorStoreSettings
    from mmrag.space import space_from_settings

    env = deployment.env()
    space = space_from_settings(SpaceSettings(clip_model_dir=deployment.clip_model_dir))
    settings = VectorStoreSettings(milvus_uri=env["MMRAG_MILVUS_URI"], collection_prefix=env["MMRAG_COLLECTION_PREFIX"])
    index = MilvusIndex.for_space(settings, space)
    index.start()
    return index


@pytest.mark.kafka
def test_awkward_keys_indexed_then_deleted_end_to_end(deployment: Deployment, bootstrap: str) -> None:
    from local_stack.stack import start_services

    start_services([deployment.service(n) for n in ("sqs_bridge", "normalizer", "text_embedder", "index_updater")])
    store = S3ObjectStore(deployment.s3_settings(), "test")
    bucket, prefix = deployment.bucket, deployment.topic_prefix
    texts = {
        key: f"Notes number {n} about awkward object keys and how they are indexed."
        for n, key in enumerate(AWKWARD_KEYS)
    }
    for key, text in texts.items():
        store.put(bucket, key, text.encode(), "text/plain")
    oids = {f"{bucket}/{key}": key for key in AWKWARD_KEYS}
    status_topic = f"{prefix}index-status.v1"

    def indexed() -> set[str]:
        return in_state(bootstrap, status_topic, bucket, IndexState.INDEX_STATE_INDEXED)

    wait_for(lambda: set(oids) <= indexed(), 240, "every awkward key indexed")
    assert indexed() == set(oids)  # no mangled id beside the real ones
    index = deployment_index(deployment)
    for oid, key in oids.items():
        rows = index.rows_of(oid)
        assert rows and {r.object_id for r in rows} == {oid}, repr(oid)
        assert texts[key] in " ".join(r.text for r in rows), repr(oid)

    for key in AWKWARD_KEYS:
        store.delete(bucket, key)
    wait_for(
        lambda: set(oids) <= in_state(bootstrap, status_topic, bucket, IndexState.INDEX_STATE_DELETED),
        180,
        "every awkward key deleted",
    )
    assert {oid: len(index.rows_of(oid)) for oid in oids} == dict.fromkeys(oids, 0)
    dlq = read_topic(bootstrap, f"{prefix}dlq.v1", idle_s=1.0)
    assert [(m.key, m.headers.get("dlq-error-message")) for m in dlq] == []
