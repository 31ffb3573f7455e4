"""`mmrag upload FILE... --bucket B`: puts files into the object store; its notifications do the rest."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mmrag.object_store import ObjectStore


@dataclass(frozen=True)
class Uploaded:
    key: str
    size: int
    etag: str


def key_for(path: Path, prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{path.name}" if prefix else path.name


def upload_files(store: ObjectStore, bucket: str, paths: Iterable[Path], prefix: str = "") -> list[Uploaded]:
    """Uploads each file under ``prefix``; raises FileNotFoundError naming a missing file before uploading any."""
    files = [Path(p) for p in paths]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"upload: not files: {missing} -> pass existing files")
    done = []
    for path in files:
        data = path.read_bytes()
        key = key_for(path, prefix)
        reply = store.put(bucket, key, data, mimetypes.guess_type(path.name)[0] or "")
        done.append(Uploaded(key, len(data), str(reply.get("ETag", "")).strip('"')))
    return done
