"""llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`) over the default packaged GGUF,
started on loopback for tests of the HTTP Generator backend."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from consumers.llm_worker.models import DEFAULT_MODEL, gguf_path, packaged_model
from local_stack.processes import free_port, wait_until


def _serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@contextmanager
def llama_server(log: Path, context_tokens: int = 2048) -> Iterator[str]:
    """Serves DEFAULT_MODEL with one thread (a shared 2-core box) until the block ends; yields the /v1 base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path(DEFAULT_MODEL))]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(context_tokens), "--n_threads", "1"]
    chat_format = packaged_model(DEFAULT_MODEL).chat_format
    cmd += ["--chat_format", chat_format] if chat_format else []
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until(lambda: proc.poll() is None and _serving(base + "/models"), 120, f"llama_cpp.server ({log})")
        yield base
    finally:
        proc.terminate()
        proc.wait(20)
