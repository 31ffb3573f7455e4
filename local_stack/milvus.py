"""milvus-lite as a local server, so several processes (updater, retrieval workers) share one index by URI."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from local_stack.processes import free_port, spawn_detached, stop_detached, wait_until


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# milvus-lite searches the rows not yet flushed (its memtable) by rebuilding their index on every search, and
# flushes at 128 MiB: 10,000 chunks (896 dims) took 2.1 s a BM25 search, 0.67 s a vector search. At 2 MiB it
# flushes every few hundred chunks (sealed segments keep their indexes): 15 ms each, for ~60% more write time.
MEMTABLE_LIMIT = "MILVUS_LITE_MEMTABLE_MEMORY_LIMIT_BYTES"
MEMTABLE_BYTES = 2 << 20


def start_milvus_lite(state_dir: Path, port: int | None = None) -> str:
    """Starts `milvus-lite server` on loopback with its data under state_dir/milvus; returns its URI. Its memtable
    limit is ``MEMTABLE_BYTES`` unless MILVUS_LITE_MEMTABLE_MEMORY_LIMIT_BYTES is set."""
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    exe = str(Path(sys.executable).with_name("milvus-lite"))
    cmd = [exe, "server", "--data-dir", str(state_dir / "milvus"), "--host", "127.0.0.1", "--port", str(port)]
    env = {MEMTABLE_LIMIT: str(MEMTABLE_BYTES), **os.environ}
    spawn_detached(cmd, state_dir / "milvus.log", state_dir / "milvus.json", env=env, uri=uri)
    wait_until(lambda: _accepts(port), 60, f"milvus-lite at {uri} (log: {state_dir / 'milvus.log'})")
    return uri


def stop_milvus_lite(state_dir: Path) -> None:
    stop_detached(state_dir / "milvus.json")
