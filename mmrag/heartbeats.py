"""Worker heartbeats: a worker that serves requests says every interval that it is there and whether it is ready, on
a compacted topic keyed by worker id (``llm.heartbeats.v1``), and ends a clean stop with a tombstone. A requester
counts the ready workers whose last heartbeat is recent, so a worker that stops beating (kill -9 included) is
absent a few heartbeats later, not when its consumer group session times out."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message

from mmrag.messages import Output, now_ms
from mmrag.producing import Deliveries, produce_outputs

log = logging.getLogger(__name__)
CONTENT_TYPE_JSON = "application/json"


@dataclass(frozen=True)
class Heartbeat:
    """What a worker says of itself. ``ready``: warmed up and holding partitions of its request topic (or handing
    them over in a rebalance), i.e. a request sent now is taken; ``partitions``: the ones it holds now."""

    worker: str
    model: str
    ready: bool
    partitions: tuple[int, ...] = ()
    at_ms: int = 0

    def encode(self) -> bytes:
        fields = {"worker": self.worker, "model": self.model, "ready": self.ready, "at_ms": self.at_ms}
        return json.dumps({**fields, "partitions": list(self.partitions)}, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Heartbeat:
        """The heartbeat in ``raw``; ValueError when it is not one."""
        try:
            data = json.loads(raw)
            partitions = tuple(int(p) for p in data.get("partitions", ()))
            return cls(str(data["worker"]), str(data["model"]), bool(data["ready"]), partitions, int(data["at_ms"]))
        except (AttributeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a heartbeat: {raw[:80]!r}") from exc


class HeartbeatSender:
    """Sends one worker's heartbeats from its loop: every ``interval_s``, and at once when what it says changes;
    ``gone`` sends the tombstone of a clean stop. Fire-and-forget on the worker's producer: a lost heartbeat is
    covered by the next one, a refused one is logged (once until one is delivered again)."""

    def __init__(self, producer: Any, topic: str, worker: str, model: str, interval_s: float) -> None:
        self.producer = producer
        self.topic = topic
        self.worker = worker
        self.model = model
        self.interval_s = interval_s
        self._said: tuple[bool, tuple[int, ...]] | None = None
        self._sent_at = 0.0
        self._deliveries = _LoggedDeliveries(worker, topic)

    def beat(self, ready: bool, partitions: tuple[int, ...]) -> None:
        now = time.monotonic()
        if (ready, partitions) == self._said and now - self._sent_at < self.interval_s:
            return
        heartbeat = Heartbeat(self.worker, self.model, ready, partitions, now_ms())
        self._produce(heartbeat.encode(), {"content-type": CONTENT_TYPE_JSON})
        self._said, self._sent_at = (ready, partitions), now

    def gone(self, timeout_s: float = 5.0) -> None:
        """The last word of a clean stop: readers drop this worker at once."""
        self._produce(None, {})
        self.producer.flush(timeout_s)

    def _produce(self, value: bytes | None, headers: dict[str, str]) -> None:
        produce_outputs(self.producer, [Output(self.topic, self.worker, value, headers)], self._deliveries)


class _LoggedDeliveries(Deliveries):
    """Delivery reports of heartbeats: a refusal is logged once until one is delivered again, nothing is kept."""

    def __init__(self, worker: str, topic: str) -> None:
        super().__init__()
        self.worker = worker
        self.topic = topic
        self._failing = False

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and not self._failing:
            log.warning(
                "heartbeat of %s not delivered to %s (%s): requesters will count it absent -> create the topic "
                "(`mmrag topics`) and check the broker",
                self.worker,
                self.topic,
                err,
            )
        self._failing = err is not None


class Roster:
    """The workers' latest heartbeats as a follower read them, each with when it was read (monotonic seconds; the
    reader's own clock, so the workers' clocks do not matter); ``ready`` counts the ready ones read recently."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._seen: dict[str, tuple[Heartbeat, float]] = {}

    def saw(self, worker: str, raw: bytes | None, read_at: float) -> None:
        """One record of the heartbeat topic: a heartbeat, or a tombstone (the worker stopped cleanly)."""
        if raw is None:
            self._seen.pop(worker, None)
            return
        try:
            self._seen[worker] = (Heartbeat.decode(raw), read_at)
        except ValueError as exc:
            log.warning("heartbeat of %s ignored: %s", worker, exc)

    def latest(self, worker: str) -> Heartbeat | None:
        """The last heartbeat read of ``worker``, whatever its age; None when none, or it said it is gone."""
        seen = self._seen.get(worker)
        return seen[0] if seen is not None else None

    def forget(self, before: float) -> None:
        """Drops the workers last read before ``before``: the roster keeps the living and the recently dead, not
        every worker id ever seen (a pod's name changes with each restart)."""
        self._seen = {w: seen for w, seen in self._seen.items() if seen[1] >= before}

    def ready(self, now: float) -> int:
        """Ready workers whose last heartbeat was read at most ``max_age_s`` before ``now``."""
        return sum(1 for beat, read_at in self._seen.values() if beat.ready and now - read_at <= self.max_age_s)
