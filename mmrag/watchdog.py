"""Bounds on Kafka client calls that may hang past their own timeout.

librdkafka's transactional calls take a timeout, but some broker failures leave them blocked far beyond it: when the
group coordinator's broker is killed and then drops out of the metadata, librdkafka decommissions it while it is
still cached as the coordinator, and ``send_offsets_to_transaction`` waits for a state change that never comes
(librdkafka issues 5511 and 5456, open and unreleased as of 2.14.2; the timeout argument is never checked there).
Nothing in the process can cancel a blocked C call, and a transaction left open holds every read_committed
consumer of its partitions. Two tools:

- ``call_within`` runs one call on a helper thread and raises ``HungCallError`` once it overruns its limit. The caller
  abandons the client (it is never touched again; its blocked thread stays parked), makes a new one with the same
  transactional id, whose ``init_transactions`` fences the hung one and aborts what it left open, and delivers the
  batch again on it: seconds, no restart (mmrag/delivery.py).
- ``CallWatchdog`` is the last resort where no replacement helps (``init_transactions`` itself hung, or clients
  abandoned too often): liveness turns red with the reason, the log says what hung, and the process exits with
  ``EXIT_STUCK``; its restart fences this incarnation.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from typing import TypeVar

from mmrag import metrics

log = logging.getLogger(__name__)

EXIT_STUCK = 75  # EX_TEMPFAIL: a restart is the cure
MARGIN_S = 15.0  # added to a call's own timeout before the watchdog ends the process
T = TypeVar("T")


class HungCallError(Exception):
    """A client call still blocked past its limit: the client must be abandoned (never used again)."""

    def __init__(self, stage: str, what: str, waited_s: float, limit_s: float) -> None:
        self.stage = stage
        self.what = what
        super().__init__(
            f"{stage}: Kafka call {what} still blocked after {waited_s:.1f}s (its limit was {limit_s:g}s; a broker "
            "or coordinator failover can leave it hung)"
        )


def call_within(stage: str, what: str, limit_s: float, call: Callable[[], T]) -> T:
    """``call()`` on a helper thread: its result, or its exception re-raised; ``HungCallError`` when it has not returned
    within ``limit_s`` (the thread stays blocked in the client, which the caller must abandon)."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread, whatever it is
            future.set_exception(exc)

    started = time.monotonic()
    threading.Thread(target=run, name=f"kafka-call-{stage}", daemon=True).start()
    if not wait([future], limit_s).done:
        metrics.STUCK_CALLS.labels(stage, what).inc()
        raise HungCallError(stage, what, time.monotonic() - started, limit_s)
    return future.result()


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
