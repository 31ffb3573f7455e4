"""Keeps a consumer in its group while work that may take long runs: the work runs in a worker thread and the loop
keeps polling with the assignment paused, so max.poll.interval.ms never passes however long a batch, a back-off
or a state restore takes. Partitions assigned meanwhile are paused on arrival and handed to the loop to restore."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from confluent_kafka import KafkaException, TopicPartition

log = logging.getLogger(__name__)
R = TypeVar("R")

# Work shorter than this runs without pausing (pausing drops the prefetched messages, which costs a fetch).
QUIET_S = 1.0
POLL_S = 0.2  # while work runs paused: the longest time between two polls


class PollKeeper:
    """The consumer's assignment as the loop sees it, and work done while the consumer keeps polling."""

    def __init__(self, consumer: Any, stage: str) -> None:
        self.consumer = consumer
        self.stage = stage
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"{stage}-work")
        self._lock = threading.Lock()
        self.assigned: set[tuple[str, int]] = set()
        self.to_restore: set[tuple[str, int]] = set()
        self.revocations = 0  # bumped on every revoke: work of an older assignment must not commit

    # -- rebalance callbacks (run inside the consumer's poll) --------------------------------------------------

    def on_assign(self, consumer: Any, partitions: list[TopicPartition], restore: bool) -> None:
        consumer.assign(partitions)
        with self._lock:
            self.assigned = {(tp.topic, tp.partition) for tp in partitions}
            if restore:
                self.to_restore |= self.assigned
        if restore and partitions:
            consumer.pause(partitions)  # no message of theirs before the state for them is restored

    def on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        with self._lock:
            gone = {(tp.topic, tp.partition) for tp in partitions}
            self.assigned -= gone
            self.to_restore -= gone
            self.revocations += 1
        consumer.unassign()

    # -- work while polling ------------------------------------------------------------------------------------

    def run(self, work: Callable[[], R], *, quiet_s: float = QUIET_S) -> R:
        """Runs ``work`` in the worker thread; when it takes longer than ``quiet_s``, pauses the assignment and keeps
        polling until it is done, then resumes what is not waiting for a restore. Exceptions of ``work`` propagate."""
        future: Future[R] = self._worker.submit(work)
        try:
            return future.result(timeout=quiet_s)
        except TimeoutError:
            pass
        self._pause_all()
        revocations = self.revocations
        try:
            while not futures.wait([future], timeout=POLL_S).done:  # on as soon as it is done; polls in between
                self._poll_paused()
        finally:
            self.resume_ready(refetch=self.revocations == revocations)
        return future.result()

    def wait(self, seconds: float) -> None:
        """Waits (a back-off) while staying in the group."""
        done = threading.Event()
        self.run(lambda: done.wait(seconds), quiet_s=0)

    def _pause_all(self) -> None:
        tps = [TopicPartition(t, p) for t, p in self.assigned]
        if tps:
            self.consumer.pause(tps)

    def resume_ready(self, refetch: bool = False) -> None:
        """Resumes the partitions not waiting for a restore. ``refetch`` (the assignment did not change while they
        were paused): each partition read since its assignment is also sought to its position, the offset the
        fetcher resumes at anyway, because librdkafka (2.16) starts fetching a resumed partition only at its
        broker thread's next wake-up, up to 1 s later (0.4-1.0 s measured against the local broker; with the seek
        ~10 ms), which cost the text embedder ~0.45 s after each batch that ran paused. A partition sought since it
        was read (a rewind, a message put back) has no position and is left as it is."""
        ready = [TopicPartition(t, p) for t, p in self.assigned - self.to_restore]
        if not ready:
            return
        positions: list[TopicPartition] = []
        if refetch:
            try:
                positions = self.consumer.position(ready)
            except KafkaException as exc:  # resumed all the same, fetched at the broker thread's next wake-up
                log.info("%s: no positions to refetch at (%s)", self.stage, exc)
        self.consumer.resume(ready)
        for tp in positions:
            if tp.offset >= 0:
                try:
                    self.consumer.seek(tp)
                except KafkaException as exc:  # it resumes all the same, at its next wake-up
                    log.info("%s: could not refetch %s[%d] at once (%s)", self.stage, tp.topic, tp.partition, exc)

    def _poll_paused(self) -> None:
        """One poll that does not wait and should return nothing (everything is paused); a message that still
        arrives, e.g. of a partition assigned without restore during the wait, is put back by seeking to it."""
        rewound: set[tuple[str, int]] = set()
        for msg in self.consumer.consume(100, 0):
            if msg.error() is not None:
                continue
            tp = (str(msg.topic()), int(msg.partition() or 0))
            if tp in rewound:
                continue
            rewound.add(tp)
            try:
                self.consumer.seek(TopicPartition(tp[0], tp[1], int(msg.offset() or 0)))
            except KafkaException as exc:
                log.info("%s: could not put back %s (%s)", self.stage, tp, exc)
        self._pause_all()

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
