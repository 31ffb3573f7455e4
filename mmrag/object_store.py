"""The ObjectStore port and its S3 adapter (AWS S3, MinIO, Ceph, or the local S3 of the stack)."""

from __future__ import annotations

from typing import Any, Protocol

from mmrag.errors import PermanentError, RetryableError
from mmrag.settings import S3Settings

MISSING_CODES = {"NoSuchKey", "404", "NoSuchBucket", "NoSuchVersion"}


class ObjectMissingError(PermanentError):
    """The object (or the version) an event names is gone from the store."""


class ObjectStore(Protocol):
    def get(self, bucket: str, key: str, version_id: str = "") -> bytes: ...

    def put(self, bucket: str, key: str, data: bytes, content_type: str = "") -> dict[str, Any]: ...

    def delete(self, bucket: str, key: str) -> None: ...


def s3_client(settings: S3Settings, service: str = "s3") -> Any:
    """A boto3 client for the configured endpoint (adaptive retries are botocore's own)."""
    import boto3
    from botocore.config import Config

    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id.get_secret_value(),
        aws_secret_access_key=settings.s3_secret_access_key.get_secret_value(),
        config=Config(retries={"max_attempts": 3, "mode": "adaptive"}, connect_timeout=5, read_timeout=30),
    )


class S3ObjectStore:
    """Reads and writes objects by bucket/key; maps S3 errors onto Retryable/PermanentError for the runner."""

    def __init__(self, settings: S3Settings, stage: str) -> None:
        self.settings = settings
        self.stage = stage
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client(self.settings)
        return self._client

    def get(self, bucket: str, key: str, version_id: str = "") -> bytes:
        return self._read(bucket, key, version_id)

    def read_prefix(self, bucket: str, key: str, length: int, version_id: str = "") -> bytes:
        """The first ``length`` bytes (a ranged GET): enough to sniff the content type of a large object."""
        return self._read(bucket, key, version_id, Range=f"bytes=0-{length - 1}")

    def _read(self, bucket: str, key: str, version_id: str, **extra: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs = {"Bucket": bucket, "Key": key, **extra}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            return bytes(self.client.get_object(**kwargs)["Body"].read())
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in MISSING_CODES:
                raise ObjectMissingError(
                    self.stage,
                    f"{bucket}/{key}",
                    f"not in the object store ({code})",
                    "it was deleted or overwritten after the event; a newer event for it follows",
                ) from exc
            if code == "InvalidRange":  # a ranged read of an empty object
                return b""
            raise RetryableError(
                self.stage, f"{bucket}/{key}", f"S3 error {code}: {exc}", "check the object store and credentials"
            ) from exc
        except BotoCoreError as exc:
            raise RetryableError(
                self.stage,
                f"{bucket}/{key}",
                f"object store unreachable: {exc}",
                f"check MMRAG_S3_ENDPOINT_URL={self.settings.s3_endpoint_url}",
            ) from exc

    def put(self, bucket: str, key: str, data: bytes, content_type: str = "") -> dict[str, Any]:
        extra = {"ContentType": content_type} if content_type else {}
        return dict(self.client.put_object(Bucket=bucket, Key=key, Body=data, **extra))

    def delete(self, bucket: str, key: str) -> None:
        self.client.delete_object(Bucket=bucket, Key=key)
