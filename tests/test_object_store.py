"""The S3 adapter against the local S3 of the stack: obstore reads (versions, key encodings, missing objects,
an unreachable endpoint) map onto the errors the runner understands."""

from __future__ import annotations

import pytest

from local_stack.processes import free_port
from mmrag.errors import RetryableError
from mmrag.object_store import ObjectMissingError, S3ObjectStore, s3_client
from mmrag.settings import S3Settings

pytestmark = pytest.mark.kafka  # needs the session infrastructure (local S3)


def test_reads_versions_and_encoded_keys(deployment: object) -> None:
    settings: S3Settings = deployment.s3_settings()  # type: ignore[attr-defined]
    bucket = f"{deployment.bucket}-versions"  # type: ignore[attr-defined]
    client = s3_client(settings)
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    key = "reports 2026/a+b/ünï ✓.txt"
    first = client.put_object(Bucket=bucket, Key=key, Body=b"first")["VersionId"]
    second = client.put_object(Bucket=bucket, Key=key, Body=b"second")["VersionId"]
    client.put_object(Bucket=bucket, Key="empty.txt", Body=b"")
    store = S3ObjectStore(settings, "test_stage")

    assert store.get(bucket, key) == b"second"
    assert store.get(bucket, key, first) == b"first"
    assert store.get(bucket, key, second) == b"second"
    assert store.get(bucket, "empty.txt") == b""
    assert store.read_prefix(bucket, key, 3) == b"sec"


def test_missing_objects_versions_and_buckets_are_permanent(deployment: object) -> None:
    settings: S3Settings = deployment.s3_settings()  # type: ignore[attr-defined]
    bucket = deployment.bucket  # type: ignore[attr-defined]
    s3_client(settings).put_object(Bucket=bucket, Key="here.txt", Body=b"x")
    store = S3ObjectStore(settings, "test_stage")
    for args in ((bucket, "gone.txt"), (bucket, "here.txt", "no-such-version"), ("no-such-bucket-x", "k")):
        with pytest.raises(ObjectMissingError) as caught:
            store.get(*args)
        message = str(caught.value)
        assert "test_stage" in message and f"{args[0]}/{args[1]}" in message and "newer event" in message


def test_unreachable_store_is_retryable_and_names_the_endpoint() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = S3ObjectStore(S3Settings(s3_endpoint_url=endpoint), "test_stage")
    with pytest.raises(RetryableError, match=f"bucket-x/k.*MMRAG_S3_ENDPOINT_URL={endpoint}"):
        store.get("bucket-x", "k")


@pytest.mark.unit
def test_obstore_configuration_for_local_minio_and_aws() -> None:
    from pydantic import SecretStr

    from mmrag.object_store import obstore_s3

    local = obstore_s3(S3Settings(s3_endpoint_url="http://127.0.0.1:9000"), "bucket-a")
    assert local.config["endpoint"] == "http://127.0.0.1:9000"
    assert local.config["virtual_hosted_style_request"] == "false" and local.client_options["allow_http"] == "true"

    minio = obstore_s3(S3Settings(s3_endpoint_url="https://minio.example:9000"), "bucket-a")
    assert minio.config["endpoint"] == "https://minio.example:9000" and minio.client_options["allow_http"] == "false"

    no_keys = S3Settings(s3_endpoint_url=None, s3_access_key_id=SecretStr(""), s3_secret_access_key=SecretStr(""))
    aws = obstore_s3(no_keys, "bucket-a")  # real AWS: default endpoint, credentials from AWS_* / the instance
    assert "endpoint" not in aws.config and "access_key_id" not in aws.config
    assert aws.config["region"] == "us-east-1" and aws.retry_config["max_retries"] == 3
