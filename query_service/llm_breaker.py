"""The circuit breaker around the LLM path (pybreaker) and the view of whether any LLM worker is there (the
workers' heartbeats).

pybreaker's ``call`` holds the breaker's lock for the whole call, so a streamed generation is never run inside it:
each request asks ``admits()`` before it starts and reports its outcome afterwards; the outcome goes through
``call`` so pybreaker counts it and moves between closed, open and half-open by its own rules. A worker coming
back after none was there moves an open breaker to half-open at once (``worker_arrived``): the next request probes
instead of waiting out the reset timeout."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pybreaker
from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from prometheus_client import Gauge

from mmrag.heartbeats import Heartbeat, Roster
from mmrag.kafka_clients import assign_since, consumer_config
from mmrag.messages import now_ms
from mmrag.request_reply import FAST_CONSUMER

log = logging.getLogger(__name__)
STATES = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}
BREAKER_STATE = Gauge("mmrag_llm_breaker_state", "LLM circuit breaker: 0 closed, 1 half-open, 2 open")
FORGET_AFTER_AGES = 30  # a worker silent for this many max ages is dropped from the roster (it counts 0 long before)
WORKERS = Gauge("mmrag_llm_workers", "LLM workers ready with a recent heartbeat (-1 = unknown)")


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

    def worker_arrived(self) -> None:
        """A worker is there again after none was: an open breaker lets the next request probe now (half-open;
        its outcome closes or opens it again). A closed or half-open breaker is left as it is."""
        if self.state == pybreaker.STATE_OPEN:
            self._breaker.half_open()

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
    """How many LLM workers are there: ready ones (warmed up, holding request partitions) whose last heartbeat on
    ``topic`` is at most ``max_age_s`` old, read by one consumer thread (every partition assigned from ``max_age_s``
    ago, no group joined, nothing committed). None while unknown: before the follower has read to the end of the
    topic, or while it has not polled for ``max_age_s`` (then requests are sent and the first-token timeout
    decides). ``on_arrival`` is called in the follower's thread when the count goes from 0 to more."""

    def __init__(
        self, bootstrap: str, topic: str, max_age_s: float, on_arrival: Callable[[], object] | None = None
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.max_age_s = max_age_s
        self.on_arrival = on_arrival
        self._roster = Roster(max_age_s)
        self._lock = threading.Lock()
        self._loading: set[int] = set()
        self._polled_at = 0.0
        self._consumer: Consumer | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="llm-presence", daemon=True)

    def start(self) -> None:
        """Assigns the heartbeat topic from ``max_age_s`` ago; RuntimeError naming the fix when it is missing."""
        group = f"llm-presence-{uuid.uuid4().hex[:8]}"  # never joined nor committed
        consumer = Consumer(consumer_config(self.bootstrap, group, **{"enable.partition.eof": True}, **FAST_CONSUMER))
        since = now_ms() - int(self.max_age_s * 1000)
        self._loading = assign_since(consumer, self.topic, since, "query_service: llm presence")
        self._consumer = consumer
        self._thread.start()

    @property
    def workers(self) -> int | None:
        now = time.monotonic()
        with self._lock:
            if self._loading or now - self._polled_at > self.max_age_s:
                return None
            return self._roster.ready(now)

    def heartbeat(self, worker: str) -> Heartbeat | None:
        """The last heartbeat read of ``worker`` (None: none, or it said it is gone)."""
        with self._lock:
            return self._roster.latest(worker)

    def _follow(self) -> None:
        assert self._consumer is not None
        while not self._stop.is_set():
            try:
                messages = self._consumer.consume(100, min(0.25, self.max_age_s / 4))
            except KafkaException as exc:  # unknown, not zero, until it polls again
                log.warning("llm presence: %s", exc)
                continue
            with self._lock:
                now = time.monotonic()
                watching = not self._loading and now - self._polled_at <= self.max_age_s
                before = self._roster.ready(now)  # who expired while this poll waited: a stop and return in one
                self._polled_at = now
                for msg in messages:
                    self._take(msg)
                after = None if self._loading else self._roster.ready(now)
                self._roster.forget(now - FORGET_AFTER_AGES * self.max_age_s)
            WORKERS.set(-1 if after is None else after)
            if watching and before == 0 and after and self.on_arrival is not None:
                log.info("llm workers back: %d", after)
                self.on_arrival()

    def _take(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                self._loading.discard(int(msg.partition() or 0))
            else:
                log.warning("llm presence: %s", err)
            return
        key = msg.key()
        if key is not None:
            self._roster.saw(key.decode(errors="replace"), msg.value(), self._polled_at)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self._consumer is not None:
            self._consumer.close()
