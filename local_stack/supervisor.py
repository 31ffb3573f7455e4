"""The local stack's supervisor: starts every service of `stack.json` as its child and restarts one that exits
(crashed, fenced, killed) with exponential backoff, logging why, as a process manager or Kubernetes would.

`python -m local_stack.supervisor --state-dir DIR` (detached, started by `mmrag stack up`). SIGTERM stops the
supervisor only; `mmrag stack down` then stops the services by their pidfiles."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from local_stack.processes import alive_pid, spawn_detached, stop_detached
from local_stack.services import Service, last_error_line
from local_stack.state import StackRecord

log = logging.getLogger("local_stack.supervisor")
PIDFILE = "supervisor.pid.json"
STATUS_FILE = "supervisor-status.json"
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0  # a run this long resets the backoff: the next crash is a new incident, not a crash loop


@dataclass
class Watched:
    """One supervised service: its process, restarts so far, and when it may start again."""

    service: Service
    restarts: int = 0
    started_at: float = 0.0
    backoff_s: float = BACKOFF_INITIAL_S
    restart_at: float | None = None
    last_exit: str = ""

    def start(self) -> None:
        self.service.start()
        self.started_at = time.monotonic()
        self.restart_at = None

    def exited(self, now: float) -> bool:
        """True once when the process has exited: schedules the restart after the current backoff."""
        proc = self.service.proc
        if self.restart_at is not None or proc is None or proc.poll() is None:
            return False
        if now - self.started_at >= STABLE_AFTER_S:
            self.backoff_s = BACKOFF_INITIAL_S
        self.last_exit = _exit_reason(proc.returncode)
        self.restart_at = now + self.backoff_s
        log.warning(
            "%s (pid %d) exited (%s); restarting in %.0fs (restart %d); last error line: %s (log %s)",
            self.service.name,
            proc.pid,
            self.last_exit,
            self.backoff_s,
            self.restarts + 1,
            last_error_line(self.service.log_path) or "-",
            self.service.log_path,
        )
        self.backoff_s = min(self.backoff_s * 2, BACKOFF_MAX_S)
        return True

    def restart_if_due(self, now: float) -> bool:
        if self.restart_at is None or now < self.restart_at:
            return False
        self.restarts += 1
        self.start()
        log.info("%s restarted (pid %d, restart %d)", self.service.name, self.service.pid or -1, self.restarts)
        return True


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


class Supervisor:
    """Starts the services and keeps them running until ``stop`` is set."""

    def __init__(self, state_dir: Path, services: list[Service], interval_s: float = 0.5) -> None:
        self.state_dir = state_dir
        self.watched = [Watched(service) for service in services]
        self.interval_s = interval_s

    def run(self, stop: threading.Event) -> None:
        for item in self.watched:
            item.start()
        self._write_status()
        while not stop.wait(self.interval_s):
            now = time.monotonic()
            changed = [item.exited(now) or item.restart_if_due(now) for item in self.watched]
            if any(changed):
                self._write_status()

    def _write_status(self) -> None:
        status = {
            item.service.name: {
                "pid": item.service.pid,
                "restarts": item.restarts,
                "last_exit": item.last_exit,
                "restarting_in_s": round(max(0.0, item.restart_at - time.monotonic()), 1) if item.restart_at else None,
            }
            for item in self.watched
        }
        tmp = self.state_dir / f".{STATUS_FILE}.tmp"
        tmp.write_text(json.dumps(status, indent=2) + "\n")
        os.replace(tmp, self.state_dir / STATUS_FILE)


def read_status(state_dir: Path) -> dict[str, dict[str, object]]:
    """The supervisor's last view per service (restarts, last exit); empty when it never ran."""
    path = state_dir / STATUS_FILE
    return dict(json.loads(path.read_text())) if path.exists() else {}


def start_supervisor(state_dir: Path) -> subprocess.Popen[bytes]:
    """Starts the supervisor of the stack recorded under ``state_dir`` in its own session (it outlives the caller)."""
    (state_dir / STATUS_FILE).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "local_stack.supervisor", "--state-dir", str(state_dir)]
    return spawn_detached(cmd, state_dir / "logs" / "supervisor.log", state_dir / PIDFILE)


def supervisor_pid(state_dir: Path) -> int | None:
    return alive_pid(state_dir / PIDFILE)


def stop_supervisor(state_dir: Path) -> None:
    """Stops the supervisor (no more restarts); its services keep running until stopped by their pidfiles."""
    stop_detached(state_dir / PIDFILE, timeout_s=10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_stack.supervisor", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    record = StackRecord.load(args.state_dir)
    if record is None:
        log.error("no stack recorded under %s -> start one with `mmrag stack up`", args.state_dir)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    services = [item.service() for item in record.services]
    log.info("supervising %s", ", ".join(s.name for s in services))
    Supervisor(args.state_dir, services).run(stop)
    log.info("supervisor stopped; the services keep running until `mmrag stack down`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
