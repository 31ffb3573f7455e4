"""Multipart uploads on the real stack: local S3 notifies `ObjectCreated:Put` and
`ObjectCreated:CompleteMultipartUpload` for the one version it stores (same ETag, up to a few ms apart);
S3 -> SQS -> sqs_bridge -> normalizer passes exactly one record for it onto objects.v1. A delete and a re-upload of
the same bytes are a tombstone and one record again."""

from __future__ import annotations

from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from mmrag.object_store import s3_client
from tests.kafka_tools import wait_for
from tests.object_events import dlq_records, metric, object_records

pytestmark = pytest.mark.kafka

PART = 5 << 20  # the smallest part S3 (and moto) accepts for all but the last part
MULTIPART = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, use_threads=False)
TEXT = "text/plain; charset=utf-8"


def test_multipart_uploads_are_one_change_each_on_objects(deployment, bootstrap: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    deployment.service("sqs_bridge").start().wait_ready()
    normalizer = deployment.service("normalizer").start().wait_ready()
    s3 = s3_client(deployment.s3_settings())
    bucket, prefix = deployment.bucket, deployment.topic_prefix
    upload = tmp_path / "notes.txt"
    upload.write_bytes(b"Kafka consumer groups share the partitions of a topic.\n" * 110_000)  # 6.2 MB: two parts
    # Several uploads: the twins' event times are now() in ms, equal for some uploads and 1 ms apart for others.
    keys = [f"big/notes-{n}.txt" for n in range(3)]
    oid = {key: f"{bucket}/{key}" for key in keys}

    def skipped() -> float:
        return metric(normalizer.probe_url, "mmrag_object_changes_skipped_total", reason="duplicate")

    for key in keys:
        s3.upload_file(str(upload), bucket, key, Config=MULTIPART)
    etag = s3.head_object(Bucket=bucket, Key=keys[0])["ETag"].strip('"')
    assert etag.endswith("-2"), etag  # a multipart ETag: the uploads took the multipart path
    wait_for(lambda: skipped() == len(keys), 60, "each upload's second notification folded into its first")
    assert sorted(object_records(bootstrap, prefix)) == [(oid[key], "MEDIA_KIND_TEXT", TEXT) for key in keys]

    s3.delete_object(Bucket=bucket, Key=keys[0])
    wait_for(lambda: len(object_records(bootstrap, prefix)) == len(keys) + 1, 60, "the delete's tombstone")
    s3.upload_file(str(upload), bucket, keys[0], Config=MULTIPART)  # the same bytes and ETag: news after a delete
    assert s3.head_object(Bucket=bucket, Key=keys[0])["ETag"].strip('"') == etag
    wait_for(lambda: skipped() == len(keys) + 1, 60, "the re-upload's second notification folded into its first")
    records = object_records(bootstrap, prefix)
    assert [r for r in records if r[0] == oid[keys[0]]] == [
        (oid[keys[0]], "MEDIA_KIND_TEXT", TEXT),
        (oid[keys[0]], "tombstone", ""),
        (oid[keys[0]], "MEDIA_KIND_TEXT", TEXT),
    ]
    assert len(records) == len(keys) + 2 and dlq_records(bootstrap, prefix) == []
