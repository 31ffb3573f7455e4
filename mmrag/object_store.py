"""The ObjectStore port and its S3 adapter (AWS S3, MinIO, Ceph, or the local S3 of the stack)."""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from mmrag import metrics
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


def obstore_s3(settings: S3Settings, bucket: str) -> Any:
    """An obstore S3 store for one bucket, for the embedders' object reads: its GETs run in Rust without the GIL
    at ~0.4 ms CPU each, where boto3 spends ~2 ms of Python (bench/embedders.py). Same endpoint and keys as boto3;
    AWS_* variables and instance credentials apply as usual where keys are not set."""
    from obstore.store import S3Store

    endpoint = settings.s3_endpoint_url
    config: dict[str, Any] = {"region": settings.s3_region}
    if endpoint:  # MinIO, Ceph or the local S3: path-style requests to that endpoint
        config.update(endpoint=endpoint, virtual_hosted_style_request=False)
    keys = settings.s3_access_key_id.get_secret_value(), settings.s3_secret_access_key.get_secret_value()
    if all(keys):
        config.update(access_key_id=keys[0], secret_access_key=keys[1])
    return S3Store(
        bucket,
        **config,
        client_options={"allow_http": bool(endpoint and endpoint.startswith("http://")), "connect_timeout": "5s"},
        retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=30)},
    )


def obstore_reads_exactly(key: str) -> bool:
    """Whether obstore addresses exactly ``key``. obstore parses keys as paths: it refuses empty, ``.`` and ``..``
    segments and control characters, and strips a leading or trailing ``/`` (reading another object). All of these
    are valid S3 keys; they are read with boto3, which sends the raw key."""
    parts_ok = all(part not in ("", ".", "..") for part in key.split("/"))
    return parts_ok and not any(unicodedata.category(ch) == "Cc" for ch in key)


class S3ObjectStore:
    """Reads and writes objects by bucket/key; maps S3 errors onto Retryable/PermanentError for the runner.

    Whole-object reads (`get`, the embedders' hot path) go through obstore where it addresses the key exactly;
    everything else through boto3."""

    def __init__(self, settings: S3Settings, stage: str) -> None:
        self.settings = settings
        self.stage = stage
        self._client: Any = None
        self._stores: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client(self.settings)
        return self._client

    def get(self, bucket: str, key: str, version_id: str = "") -> bytes:
        """The whole object (``version_id``: that version) by its raw key, whatever characters S3 allowed in it."""
        with metrics.FETCH_SECONDS.labels(self.stage).time():
            if obstore_reads_exactly(key):
                return self._get_obstore(bucket, key, version_id)
            return self._read(bucket, key, version_id)

    def _get_obstore(self, bucket: str, key: str, version_id: str) -> bytes:
        import obstore
        from obstore.exceptions import BaseError, NotFoundError

        with self._lock:
            store = self._stores.get(bucket)
            if store is None:
                store = self._stores[bucket] = obstore_s3(self.settings, bucket)
        try:
            got = obstore.get(store, key, options={"version": version_id} if version_id else None)
            return bytes(got.bytes())
        except (NotFoundError, FileNotFoundError) as exc:  # obstore raises the builtin for a 404
            raise self._missing(bucket, key, f"version {version_id}" if version_id else "no such key") from exc
        except (BaseError, OSError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RetryableError(
                self.stage,
                f"{bucket}/{key}",
                f"object store read failed: {first_line}",
                f"check the object store at MMRAG_S3_ENDPOINT_URL={self.settings.s3_endpoint_url} and its credentials",
            ) from exc
        except ValueError:  # a path rule of obstore's that obstore_reads_exactly does not know: read the raw key
            return self._read(bucket, key, version_id)

    def _missing(self, bucket: str, key: str, detail: str) -> ObjectMissingError:
        return ObjectMissingError(
            self.stage,
            f"{bucket}/{key}",
            f"not in the object store ({detail})",
            "it was deleted or overwritten after the event; a newer event for it follows",
        )

    def read_prefix(self, bucket: str, key: str, length: int, version_id: str = "") -> bytes:
        """The first ``length`` bytes (a ranged GET): enough to sniff the content type of a large object."""
        return self._read(bucket, key, version_id, Range=f"bytes=0-{length - 1}")

    def tags(self, bucket: str, key: str) -> dict[str, str]:
        """The current version's tags (GetObjectTagging). Raises ObjectMissingError when it is gone,
        RetryableError for any other S3 failure."""
        found = self._s3(bucket, key, lambda: self.client.get_object_tagging(Bucket=bucket, Key=key))
        return {t["Key"]: t["Value"] for t in found.get("TagSet", [])}

    def _read(self, bucket: str, key: str, version_id: str, **extra: str) -> bytes:
        kwargs = {"Bucket": bucket, "Key": key, **extra}
        if version_id:
            kwargs["VersionId"] = version_id
        return self._s3(bucket, key, lambda: bytes(self.client.get_object(**kwargs)["Body"].read()), empty=b"")

    def _s3(self, bucket: str, key: str, call: Callable[[], Any], empty: Any = None) -> Any:
        """``call``'s answer; S3's errors as the pipeline's (``empty`` for a ranged read of an empty object)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in MISSING_CODES:
                raise self._missing(bucket, key, code) from exc
            if code == "InvalidRange" and empty is not None:  # a ranged read of an empty object
                return empty
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
