"""Deployables as child processes (`python -m <module>`), each with its log file and probe port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from local_stack.processes import free_port, spawn_detached, wait_until

_ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL|FATAL|Traceback|Fatal Python error)\b|\w+(Error|Exception):")


def last_error_line(log: Path, tail_bytes: int = 65536) -> str:
    """The last line of ``log`` that reports an error (ERROR/CRITICAL, a traceback, an exception); '' when none."""
    if not log.exists():
        return ""
    with open(log, "rb") as handle:
        handle.seek(max(0, log.stat().st_size - tail_bytes))
        lines = handle.read().decode(errors="replace").splitlines()
    errors = [line.strip() for line in lines if _ERROR_LINE.search(line)]
    return errors[-1][:240] if errors else ""


@dataclass
class Service:
    """One deployable process. ``env`` holds its MMRAG_* settings on top of the parent environment."""

    name: str
    module: str
    env: dict[str, str]
    log_dir: Path
    probe_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def probe_url(self) -> str:
        return f"http://127.0.0.1:{self.probe_port}"

    def start(self) -> Service:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {
            # OpenMP threads sleep at barriers instead of spinning: beside other processes on few cores, spinning
            # made MiniLM 1.7x slower and a 1-query forward 60x (docs/architecture.md "Embedders"); env overrides
            "OMP_WAIT_POLICY": "PASSIVE",
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **self.env,
            "MMRAG_PROBE_PORT": str(self.probe_port),
        }
        self.proc = spawn_detached([sys.executable, "-m", self.module], self.log_path, self.pidfile, env=env)
        return self

    @property
    def pidfile(self) -> Path:
        return self.log_dir / f"{self.name}.pid.json"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        if not self.alive():
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode if self.proc else '?'}; "
                f"last log lines:\n{self.log_tail()}"
            )
        try:
            with urllib.request.urlopen(self.probe_url + "/readyz", timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 120) -> Service:
        wait_until(self.ready, timeout_s, f"{self.name} readiness ({self.probe_url}/readyz, log {self.log_path})")
        return self

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crash looks like."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM (finish the batch, stop), SIGKILL after ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
