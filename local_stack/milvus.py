"""milvus-lite as a local server, so several processes (updater, retrieval workers) share one index by URI."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from local_stack.processes import free_port, spawn_detached, stop_detached, wait_until


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_milvus_lite(state_dir: Path, port: int | None = None) -> str:
    """Starts `milvus-lite server` on loopback with its data under state_dir/milvus; returns its URI."""
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    exe = str(Path(sys.executable).with_name("milvus-lite"))
    cmd = [exe, "server", "--data-dir", str(state_dir / "milvus"), "--host", "127.0.0.1", "--port", str(port)]
    spawn_detached(cmd, state_dir / "milvus.log", state_dir / "milvus.json", uri=uri)
    wait_until(lambda: _accepts(port), 60, f"milvus-lite at {uri} (log: {state_dir / 'milvus.log'})")
    return uri


def stop_milvus_lite(state_dir: Path) -> None:
    stop_detached(state_dir / "milvus.json")
