"""`mmrag watch DIR --bucket B [--prefix P]`: mirrors a local directory into the object store as it changes.

Uploads go to the store, not to Kafka: the store's notifications (SQS, webhook, MinIO's Kafka target) carry them
on, so a local edit travels the same path as a production upload. On start, files missing from the bucket or with
other content (MD5 != ETag) are uploaded; then every created, modified, moved or deleted file is mirrored once it
has been quiet for a moment (editors write in several steps). Hidden files and `~` backups are left alone.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import mimetypes
import sys
import threading
import time
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from mmrag.object_store import ObjectStore, S3ObjectStore
from mmrag.service import install_stop_signals
from mmrag.settings import S3Settings
from mmrag.telemetry import setup_logging

log = logging.getLogger(__name__)


def bucket_etags(client: Any, bucket: str, prefix: str) -> dict[str, str]:
    """key -> ETag of every object under ``prefix``."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = str(obj["ETag"]).strip('"')
    return found


class DirectoryMirror(FileSystemEventHandler):
    """Collects filesystem events per path; ``sync_due`` applies the paths that have been quiet long enough."""

    def __init__(self, root: Path, store: ObjectStore, bucket: str, prefix: str = "", quiet_s: float = 0.5) -> None:
        self.root = root.resolve()
        self.store = store
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.quiet_s = quiet_s
        self._due: dict[Path, float] = {}
        self._lock = threading.Lock()

    def key_for(self, path: Path) -> str:
        rel = path.relative_to(self.root).as_posix()
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        with self._lock:
            for raw in filter(None, paths):
                path = Path(str(raw)).resolve()
                if not path.name.startswith(".") and not path.name.endswith("~"):
                    self._due[path] = time.monotonic()

    def initial_sync(self, existing: dict[str, str]) -> int:
        """Uploads files the bucket lacks or holds with other content; returns how many."""
        uploaded = 0
        for path in sorted(p for p in self.root.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if existing.get(self.key_for(path)) != hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest():
                self._apply(path)
                uploaded += 1
        return uploaded

    def sync_due(self, force: bool = False) -> int:
        """Uploads or deletes every path quiet for ``quiet_s`` (all when ``force``); returns how many."""
        now = time.monotonic()
        with self._lock:
            ready = [p for p, t in self._due.items() if force or now - t >= self.quiet_s]
            for path in ready:
                del self._due[path]
        for path in ready:
            self._apply(path)
        return len(ready)

    def _apply(self, path: Path) -> None:
        key = self.key_for(path)
        if path.is_file():
            self.store.put(self.bucket, key, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "")
            log.info("watch: uploaded s3://%s/%s", self.bucket, key)
        elif not path.exists():
            self.store.delete(self.bucket, key)
            log.info("watch: deleted s3://%s/%s", self.bucket, key)


def watch_directory(mirror: DirectoryMirror, existing: dict[str, str], stop: threading.Event) -> None:
    """Initial sync, then mirrors changes until ``stop`` is set (what is pending then is applied)."""
    uploaded = mirror.initial_sync(existing)
    log.info("watch: %s -> s3://%s/%s (%d uploaded at start)", mirror.root, mirror.bucket, mirror.prefix, uploaded)
    observer = Observer()
    observer.schedule(mirror, str(mirror.root), recursive=True)
    observer.start()
    try:
        while not stop.wait(0.1):
            mirror.sync_due()
    finally:
        observer.stop()
        observer.join(5)
        mirror.sync_due(force=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="watch", description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--quiet-s", type=float, default=0.5, help="how long a file must be unchanged to upload")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        print(f"watch: {args.directory} is not a directory -> pass the directory to mirror", file=sys.stderr)
        return 2
    settings = S3Settings()
    setup_logging("INFO")
    store = S3ObjectStore(settings, "watch")
    mirror = DirectoryMirror(args.directory, store, args.bucket, args.prefix, args.quiet_s)
    stop = threading.Event()
    install_stop_signals(stop)
    watch_directory(mirror, bucket_etags(store.client, args.bucket, mirror.prefix), stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
