"""Readiness that tells the truth about a dependency whether or not traffic meets it: a thread asks the dependency
a cheap question every ``interval_s`` and counts no answer within ``timeout_s`` as down — a stopped one refuses, a
frozen one (SIGSTOP, a hung server, a black-holed network) only times out, and a stage with nothing to do would
never find out either way.

The rule per deployable (docs/architecture.md "Degradation"): a stage that needs the dependency for every message
(the embedders and the object store, the index updater and Milvus) is not ready while it is down (Kubernetes holds a
rollout and alerts; a Kafka consumer gets no Service traffic, so nothing is routed away); a stage that still answers
without it (a retrieval worker answering from its keyword index) stays ready and says ``degraded`` in the detail.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from mmrag.milvus_index import milvus_client
from mmrag.settings import BaseServiceSettings, VectorStoreSettings
from mmrag.telemetry import Probes

log = logging.getLogger(__name__)


class DependencyWatch:
    """``ping`` raises when the dependency does not answer right; ``degraded_only``: down is reported as a degraded
    detail of a ready service instead of not-ready."""

    def __init__(
        self,
        name: str,
        ping: Callable[[], object],
        interval_s: float = 2.0,
        timeout_s: float = 3.0,
        degraded_only: bool = False,
    ) -> None:
        self.name = name
        self.ping = ping
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.degraded_only = degraded_only
        self._problem: str | None = None
        self._since = time.monotonic()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"ping-{name}")
        self._pending: Future[object] | None = None
        self._thread = threading.Thread(target=self._loop, name=f"watch-{name}", daemon=True)

    def start(self) -> DependencyWatch:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def up(self) -> bool:
        return self._problem is None

    def check(self) -> tuple[bool, str]:
        """For ``Probes.add_check``: (ok, detail)."""
        if self._problem is None:
            return True, f"{self.name}: ok"
        down = f"{self.name} down for {time.monotonic() - self._since:.0f}s: {self._problem}"
        return (True, f"degraded: {down}") if self.degraded_only else (False, down)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._set(self._ask())
            self._stop.wait(self.interval_s)

    def _ask(self) -> str | None:
        """None when the dependency answered in time; else why not. A ping still hanging from before is not asked
        again: the dependency is still not answering."""
        if self._pending is None or self._pending.done():
            self._pending = self._pool.submit(self.ping)
        try:
            self._pending.result(timeout=self.timeout_s)
        except FutureTimeout:
            return f"no answer within {self.timeout_s:.0f}s (frozen or unreachable)"
        except Exception as exc:  # noqa: BLE001 - any failure of the ping is the dependency's state, reported
            return f"{type(exc).__name__}: {str(exc)[:200]}"
        return None

    def _set(self, problem: str | None) -> None:
        if (problem is None) != (self._problem is None):
            self._since = time.monotonic()
            if problem is None:
                log.info("%s answers again", self.name)
            else:
                log.warning("%s does not answer: %s", self.name, problem)
        self._problem = problem


def watch(
    probes: Probes, settings: BaseServiceSettings, name: str, ping: Callable[[], object], degraded_only: bool = False
) -> DependencyWatch:
    """Starts watching ``name`` with the stage's settings and adds it to the stage's readiness."""
    watcher = DependencyWatch(
        name, ping, settings.dependency_check_interval_s, settings.dependency_timeout_s, degraded_only
    ).start()
    probes.add_check(name, watcher.check)
    return watcher


def ping_milvus(settings: VectorStoreSettings, timeout_s: float) -> None:
    """Asks Milvus for its version on a connection of its own (raises when it does not answer)."""
    client = milvus_client(settings.milvus_uri, settings.milvus_token.get_secret_value(), timeout_s)
    try:
        client.get_server_version(timeout=timeout_s)
    finally:
        client.close()
