"""The circuit breaker around the LLM path (pybreaker) and the view of whether any LLM worker is there.

pybreaker's ``call`` holds the breaker's lock for the whole call, so a streamed generation is never run inside it:
each request asks ``admits()`` before it starts and reports its outcome afterwards; the outcome goes through
``call`` so pybreaker counts it and moves between closed, open and half-open by its own rules."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import pybreaker
from confluent_kafka import ConsumerGroupState, KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import Gauge

log = logging.getLogger(__name__)
STATES = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}
BREAKER_STATE = Gauge("mmrag_llm_breaker_state", "LLM circuit breaker: 0 closed, 1 half-open, 2 open")
WORKERS = Gauge("mmrag_llm_workers", "LLM workers assigned the request topic (-1 = unknown)")


class LlmUnavailableError(Exception):
    """The LLM path failed one request; ``reason`` is the degraded answer's reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _outcome(failure: LlmUnavailableError | None) -> None:
    if failure is not None:
        raise failure


class LlmBreaker(pybreaker.CircuitBreakerListener):
    def __init__(self, fail_max: int, reset_timeout_s: float) -> None:
        self.reset_timeout_s = reset_timeout_s
        self._opened_at = 0.0
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max, reset_timeout=reset_timeout_s, listeners=[self], name="llm"
        )
        BREAKER_STATE.set(0)

    @property
    def state(self) -> str:
        return str(self._breaker.current_state)

    def admits(self) -> bool:
        """False while open and the reset timeout has not passed (then the next requests probe: half-open)."""
        return not (self.state == pybreaker.STATE_OPEN and time.monotonic() - self._opened_at < self.reset_timeout_s)

    def record(self, failure: LlmUnavailableError | None) -> None:
        """Counts one request's outcome: None for success."""
        with contextlib.suppress(LlmUnavailableError, pybreaker.CircuitBreakerError):
            self._breaker.call(_outcome, failure)

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        name = new_state.name
        BREAKER_STATE.set(STATES.get(name, -1))
        if name == pybreaker.STATE_OPEN:
            self._opened_at = time.monotonic()
        log.warning("LLM breaker %s -> %s", old_state.name if old_state else "-", name)

    def detail(self) -> str:
        return f"llm breaker {self.state} ({self._breaker.fail_counter}/{self._breaker.fail_max} failures)"


class WorkerPresence:
    """How many members of the LLM workers' group hold partitions of the request topic, refreshed in the
    background; None while unknown (then requests are sent and the first-token timeout decides)."""

    def __init__(self, bootstrap: str, group: str, topic: str, interval_s: float) -> None:
        self.group = group
        self.topic = topic
        self.interval_s = interval_s
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._count: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llm-presence", daemon=True)

    def start(self) -> None:
        self._refresh()
        self._thread.start()

    @property
    def workers(self) -> int | None:
        return self._count

    def _refresh(self) -> None:
        try:
            future = self._admin.describe_consumer_groups([self.group], request_timeout=5)[self.group]
            described = future.result(timeout=5)
            if described.members and described.state != ConsumerGroupState.STABLE:
                self._count = None  # rebalancing: partitions are being handed over, not gone
            else:
                self._count = sum(
                    any(tp.topic == self.topic for tp in m.assignment.topic_partitions) for m in described.members
                )
        except (KafkaException, TimeoutError, KeyError) as exc:  # unknown, not zero: requests are still sent
            log.debug("llm worker presence unknown: %s", exc)
            self._count = None
        WORKERS.set(-1 if self._count is None else self._count)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._refresh()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
