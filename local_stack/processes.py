"""Small process helpers for the local stack: free ports, waiting for readiness."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range and never handed out before by this process.

    A port from ``bind(0)`` is an ephemeral one: between closing the probe socket and the service binding it, any
    outgoing connection on the machine (Kafka clients open many) may take it as its local port, and the service
    dies with "Address already in use". Ports under the ephemeral range are never given to outgoing connections."""
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    floor = 15000 if low > 20000 else 1024
    for _ in range(200):
        port = random.randrange(floor, low)
        if port not in _handed_out and port_free(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"[local stack] no free port in {floor}-{low - 1} after 200 tries -> stop other local services")


def port_free(port: int) -> bool:
    """Whether a server can bind ``port`` on loopback now, however it binds: an IPv4 socket, or an IPv6 one with
    v4-mapped addresses as gRPC does (an IPv4-only bind succeeds beside such a listener), and nothing accepts there.
    """
    binds = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::ffff:127.0.0.1"), (socket.AF_INET6, "::1"))
    for family, host in binds:
        try:
            with socket.socket(family) as sock:
                sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE or family == socket.AF_INET:
                return False  # else: no IPv6 on this machine, so nothing can listen there either
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    """Polls ``check`` until true; raises TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def spawn_detached(
    cmd: list[str], log_path: Path, pidfile: Path, env: dict[str, str] | None = None, **info: str
) -> subprocess.Popen[bytes]:
    """Starts ``cmd`` in its own session (it outlives the caller), logging to ``log_path``; records it in pidfile."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    pidfile.write_text(json.dumps({"pid": proc.pid, **info}))
    return proc


def stop_detached(pidfile: Path, timeout_s: float = 10) -> None:
    """SIGTERM the process group a pidfile names (SIGKILL after timeout); no error when it is gone already."""
    stop_all_detached([pidfile], timeout_s)


def stop_all_detached(pidfiles: list[Path], timeout_s: float = 10) -> None:
    """``stop_detached`` for several at once: all get SIGTERM together, so they finish in parallel."""
    pids = {}
    for pidfile in pidfiles:
        if pidfile.exists():  # the whole process group: what the process started goes too
            pids[pidfile] = int(json.loads(pidfile.read_text())["pid"])
            with suppress(ProcessLookupError):
                os.killpg(pids[pidfile], signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.1)
    for pid in pids.values():
        if _alive(pid):
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    for pidfile in pidfiles:
        pidfile.unlink(missing_ok=True)


def alive_pid(pidfile: Path) -> int | None:
    """The pid a pidfile names while that process runs; None when there is no pidfile or the process is gone."""
    try:
        pid = int(json.loads(pidfile.read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs; reaps it when it is our exited child (a zombie would look alive forever)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: the signal probe below decides
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"  # a zombie whose parent has not reaped it yet has exited all the same
