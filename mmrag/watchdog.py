"""A bound on Kafka client calls that may hang past their own timeout.

librdkafka's transactional calls take a timeout, but some broker failures (the group or transaction coordinator
killed mid-call) leave ``send_offsets_to_transaction`` or ``commit_transaction`` blocked far beyond it. Nothing in
the process can cancel a blocked C call, and a transaction left open holds every read_committed consumer of its
partitions. So a guarded call that overruns its limit ends the process: liveness turns red with the reason, the
log says what hung, and the process exits with ``EXIT_STUCK``. Its restart (the local stack's supervisor, a
Kubernetes restart) calls ``init_transactions`` with the same transactional id, which fences this incarnation and
aborts what it left open; the batch is redone from the last committed offsets.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mmrag import metrics

log = logging.getLogger(__name__)

EXIT_STUCK = 75  # EX_TEMPFAIL: a restart is the cure
MARGIN_S = 15.0  # added to a call's own timeout before it counts as hung


def exit_stuck(reason: str) -> None:
    """The default overrun action: log, flush, leave at once (no cleanup: the stuck call holds client locks)."""
    log.critical("%s; exiting so that a restart fences this incarnation and redoes the batch", reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_STUCK)


class CallWatchdog:
    """Watches one call at a time (the stage's loop thread) and acts when it runs past its limit."""

    def __init__(
        self,
        stage: str,
        on_overrun: Callable[[str], None] = exit_stuck,
        mark_dead: Callable[[str], None] | None = None,
        margin_s: float = MARGIN_S,
    ) -> None:
        self.stage = stage
        self.margin_s = margin_s
        self.on_overrun = on_overrun
        self.mark_dead = mark_dead
        self._lock = threading.Lock()
        self._call: tuple[str, float, float] | None = None  # (what, started, deadline)
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"watchdog-{stage}", daemon=True)
        self._thread.start()

    @contextmanager
    def guard(self, what: str, timeout_s: float) -> Iterator[None]:
        """Runs the body as ``what``, allowed ``timeout_s`` (the call's own timeout) plus a margin."""
        started = time.monotonic()
        with self._lock:
            self._call = (what, started, started + timeout_s + self.margin_s)
        self._wake.set()
        try:
            yield
        finally:
            with self._lock:
                self._call = None

    def _watch(self) -> None:
        while True:
            with self._lock:
                call = self._call
            if call is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            what, started, deadline = call
            now = time.monotonic()
            if now < deadline:
                time.sleep(min(0.5, deadline - now))
                continue
            with self._lock:
                if self._call is not call:
                    continue  # it returned meanwhile
            reason = f"{self.stage}: Kafka call {what} still blocked after {now - started:.0f}s (its limit was "
            reason += f"{deadline - started - self.margin_s:.0f}s; a broker or coordinator failover can leave it hung)"
            metrics.STUCK_CALLS.labels(self.stage, what).inc()
            if self.mark_dead is not None:
                self.mark_dead(reason)
            self.on_overrun(reason)
            with self._lock:
                if self._call is call:
                    self._call = None  # a test's on_overrun returns: report each overrun once
