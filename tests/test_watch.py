"""`mmrag watch`: a directory mirrored into the object store (initial sync, create, modify, move, delete)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mmrag.object_store import S3ObjectStore, s3_client
from producers.watch import DirectoryMirror, bucket_etags, watch_directory
from tests.kafka_tools import wait_for

pytestmark = pytest.mark.kafka


def test_watch_mirrors_a_directory_into_the_bucket(deployment, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bucket = f"watch-{deployment.bucket}"
    client = s3_client(deployment.s3_settings())
    client.create_bucket(Bucket=bucket)
    root = tmp_path / "notes"
    (root / "old").mkdir(parents=True)
    (root / "old" / "existing.md").write_text("there before the watch")
    client.put_object(Bucket=bucket, Key="mirror/same.md", Body=b"unchanged")
    (root / "same.md").write_text("unchanged")

    store = S3ObjectStore(deployment.s3_settings(), "test")
    mirror = DirectoryMirror(root, store, bucket, "mirror/", quiet_s=0.2)
    stop = threading.Event()
    watcher = threading.Thread(target=watch_directory, args=(mirror, bucket_etags(client, bucket, "mirror"), stop))
    watcher.start()

    def keys() -> dict[str, bytes]:
        found = bucket_etags(client, bucket, "mirror/")
        return {k: store.get(bucket, k) for k in found}

    try:
        wait_for(lambda: "mirror/old/existing.md" in keys(), 30, "the initial sync")
        (root / "new file+1.txt").write_text("first")
        (root / ".draft.swp").write_text("editor noise")
        wait_for(lambda: keys().get("mirror/new file+1.txt") == b"first", 30, "the new file")
        (root / "new file+1.txt").write_text("second")
        wait_for(lambda: keys().get("mirror/new file+1.txt") == b"second", 30, "the modification")
        (root / "old" / "existing.md").rename(root / "moved.md")
        (root / "same.md").unlink()
        wait_for(lambda: "mirror/same.md" not in keys(), 30, "the deletion")
    finally:
        stop.set()
        watcher.join(10)
    assert keys() == {"mirror/new file+1.txt": b"second", "mirror/moved.md": b"there before the watch"}
