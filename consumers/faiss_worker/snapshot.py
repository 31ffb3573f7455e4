"""Snapshots of a Faiss shard: the index (Faiss' own serialization, as ``faiss.write_index`` writes it), the payload
rows and the vectors.v1 offset they contain, written into a temporary directory and renamed into place at once.

Layout: ``<root>/<topic>-<partition>/<next offset, 20 digits>/{index.faiss, rows.jsonl, offsets.json}``, and
``growing.faiss`` (a flat index of the rows not yet in an HNSW graph) when there are such rows; an index kept per
half of the joint vector (``mmrag.faiss_halves``) has those files once per half, in ``text/`` and ``image/``. A
snapshot of the other layout than the shard keeps is not loaded (the shard rebuilds from the log). A directory
with a final name is complete (rename is atomic); the newest one that matches the shard is loaded, older ones are
pruned. Replicas of one shard may share a root: two snapshots of one offset are identical, the second is dropped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmrag.faiss_halves import HalvesIndex
from mmrag.faiss_index import FaissIndex, FaissSettings, IndexState
from mmrag.messages import now_ms
from mmrag.vector_index import VectorRow

log = logging.getLogger(__name__)

KEEP = 2


@dataclass(frozen=True)
class SnapshotMark:
    """Where a snapshot's state stands in the log, and for which space."""

    topic: str
    partition: int
    next_offset: int
    space_id: str
    taken_at_ms: int = 0


def shard_dir(root: Path, topic: str, partition: int) -> Path:
    return root / f"{topic}-{partition}"


def write_snapshot(root: Path, index: FaissIndex | HalvesIndex, mark: SnapshotMark) -> Path:
    """Writes the snapshot of ``index`` at ``mark`` (fsynced) and renames it into place; returns its directory."""
    states = index.state() if isinstance(index, HalvesIndex) else {"": index.state()}
    parent = shard_dir(root, mark.topic, mark.partition)
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / f"{mark.next_offset:020d}"
    tmp = parent / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        metas = {}
        for name, (raw, rows, meta, growing) in states.items():
            where = tmp / name
            where.mkdir(exist_ok=True)
            _write(where / "index.faiss", raw)
            if growing is not None:
                _write(where / "growing.faiss", growing)
            payload = "".join(json.dumps(_payload(r), ensure_ascii=False) + "\n" for r in rows)
            _write(where / "rows.jsonl", payload.encode())
            metas[name] = meta
        index_meta = {"halves": metas} if isinstance(index, HalvesIndex) else metas[""]
        header = {**asdict(replace(mark, taken_at_ms=now_ms())), "index": index_meta}
        _write(tmp / "offsets.json", json.dumps(header).encode())
        try:
            os.rename(tmp, final)
        except OSError:  # a replica sharing the root wrote this offset already: same state
            shutil.rmtree(tmp, ignore_errors=True)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(parent)
    return final


def load_latest(
    root: Path,
    topic: str,
    partition: int,
    space_id: str,
    settings: FaissSettings,
    max_age_ms: int,
    per_half: bool = False,
) -> tuple[FaissIndex | HalvesIndex, SnapshotMark] | None:
    """The newest usable snapshot of the shard, or None. Unusable (logged, skipped): another space, unreadable, or
    older than ``max_age_ms`` (compaction may have dropped tombstones it never saw), or of the other layout than
    ``per_half`` asks for (one index per half of the joint vector, or one index)."""
    parent = shard_dir(root, topic, partition)
    candidates = sorted((p for p in parent.glob("[0-9]*") if p.is_dir()), reverse=True) if parent.exists() else []
    for path in candidates:
        try:
            header = json.loads((path / "offsets.json").read_text())
            index_meta = header.pop("index")
            mark = SnapshotMark(**header)
            if mark.space_id != space_id:
                log.warning("snapshot %s is of space %s, not %s: not loaded", path, mark.space_id, space_id)
                continue
            if now_ms() - mark.taken_at_ms > max_age_ms:
                log.warning("snapshot %s is older than %d ms: rebuilding from the log instead", path, max_age_ms)
                return None
            if ("halves" in index_meta) != per_half:
                layout = "per half" if per_half else "one index"
                log.warning("snapshot %s is not of this shard's layout (%s): rebuilding from the log", path, layout)
                return None
            if per_half:
                states = {name: _state(path / name, meta) for name, meta in index_meta["halves"].items()}
                return HalvesIndex.restored(states, settings), mark
            raw, rows, meta, growing = _state(path, index_meta)
            return FaissIndex.restored(raw, rows, meta, settings, growing), mark
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            log.warning("snapshot %s unreadable (%s): trying an older one", path, exc)
    return None


def _state(path: Path, meta: dict[str, Any]) -> IndexState:
    rows = [_row(json.loads(line)) for line in (path / "rows.jsonl").read_text().splitlines()]
    growing = (path / "growing.faiss").read_bytes() if "built" in meta else None
    return IndexState((path / "index.faiss").read_bytes(), rows, meta, growing)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(parent: Path) -> None:
    done = sorted((p for p in parent.glob("[0-9]*") if p.is_dir()), reverse=True)
    for old in done[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)


def _payload(row: VectorRow) -> dict[str, Any]:
    data = asdict(row)
    data.pop("vector")
    return data


def _row(data: dict[str, Any]) -> VectorRow:
    readers = tuple(data.pop("readers", ()))  # JSON keeps the tuple as a list; snapshots from before have none
    return VectorRow(vector=np.empty(0, dtype=np.float32), readers=readers, **data)
