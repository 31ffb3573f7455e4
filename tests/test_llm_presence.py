"""LLM worker presence from heartbeats and the breaker's probe when a worker comes back: the roster's rules and the
breaker as units, then heartbeats sent and followed through the real broker (a worker that stops beating is absent
once its last heartbeat is older than the max age; a tombstone makes it absent at once; a ready one counts, a
warming one does not; the count going from 0 to 1 calls the arrival hook once)."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Producer

from mmrag.heartbeats import Heartbeat, HeartbeatSender, Roster
from mmrag.topics import Topics, ensure_topics
from query_service.llm_breaker import LlmBreaker, LlmUnavailableError, WorkerPresence
from tests.kafka_tools import wait_for


def beat(worker: str, ready: bool = True) -> bytes:
    return Heartbeat(worker, "smollm2-135m", ready, (0, 1) if ready else (), 1_700_000_000_000).encode()


@pytest.mark.unit
def test_a_heartbeat_reads_back_as_written_and_junk_is_refused() -> None:
    sent = Heartbeat("llm_worker-0", "smollm2-135m", True, (0, 2), 1_700_000_000_000)
    assert Heartbeat.decode(sent.encode()) == sent
    for junk in (b"[]", b'{"worker": "w"}', b'{"worker": "w", "model": "m", "ready": true, "at_ms": "soon"}'):
        with pytest.raises(ValueError):
            Heartbeat.decode(junk)


@pytest.mark.unit
def test_the_roster_counts_ready_workers_read_within_the_max_age() -> None:
    roster = Roster(max_age_s=2.0)
    roster.saw("a", beat("a"), read_at=100.0)
    roster.saw("b", beat("b"), read_at=101.0)
    roster.saw("c", beat("c", ready=False), read_at=101.0)  # warming up, or holding no request partition
    roster.saw("d", b"not json", read_at=101.0)
    assert roster.ready(now=101.5) == 2
    assert roster.ready(now=102.5) == 1, "a's last heartbeat is 2.5 s old: absent"
    roster.saw("a", beat("a"), read_at=102.5)
    assert roster.ready(now=102.5) == 2, "a beats again: present again"
    roster.saw("b", None, read_at=102.6)  # b stopped cleanly
    assert roster.ready(now=102.6) == 1 and roster.latest("b") is None
    roster.forget(before=102.0)
    assert roster.latest("a") is not None and roster.latest("c") is None, "c was last read at 101.0"


@pytest.mark.unit
def test_a_worker_coming_back_lets_an_open_breaker_probe_before_its_reset_timeout() -> None:
    breaker = LlmBreaker(fail_max=2, reset_timeout_s=300)
    breaker.worker_arrived()
    assert breaker.state == "closed", "a closed breaker is left as it is"
    for _ in range(2):
        breaker.record(LlmUnavailableError("no-llm-worker"))
    assert breaker.state == "open" and not breaker.admits()
    breaker.worker_arrived()
    assert breaker.state == "half-open" and breaker.admits(), "the next request probes now, not in 300 s"
    breaker.record(LlmUnavailableError("llm-timeout"))
    assert breaker.state == "open" and not breaker.admits(), "a failed probe opens it again for the reset timeout"
    breaker.worker_arrived()
    breaker.record(None)
    assert breaker.state == "closed" and breaker.admits()


@pytest.mark.kafka
def test_presence_follows_heartbeats_on_the_broker(bootstrap: str, unique: str) -> None:
    topics = Topics(f"hb{unique}.")
    ensure_topics(bootstrap, topics)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    earlier = HeartbeatSender(producer, topics.llm_heartbeats, "earlier", "m", interval_s=0.2)
    earlier.beat(True, (0,))  # written before the follower starts: read from max_age ago
    producer.flush(10)
    arrivals: list[int] = []
    presence = WorkerPresence(bootstrap, topics.llm_heartbeats, max_age_s=3.0, on_arrival=lambda: arrivals.append(1))
    presence.start()
    try:
        wait_for(lambda: presence.workers == 1, 10, "the heartbeat written before the start to count")
        wait_for(lambda: presence.workers == 0, 10, "the earlier worker to expire: it beats no more")
        assert arrivals == []

        worker = HeartbeatSender(producer, topics.llm_heartbeats, "w-1", "m", interval_s=0.2)
        stop = threading.Event()
        ready = threading.Event()

        def loop() -> None:  # the worker's loop: warming first, then ready and holding partitions
            while not stop.wait(0.05):
                worker.beat(ready.is_set(), (0, 1, 2) if ready.is_set() else ())
                producer.poll(0)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        wait_for(lambda: presence.heartbeat("w-1"), 10, "the warming worker's heartbeat to be read")
        assert presence.workers == 0, "a worker that is not ready does not count"
        ready.set()
        wait_for(lambda: presence.workers == 1, 10, "the ready worker to count")
        wait_for(lambda: arrivals, 5, "the arrival hook (0 -> 1)")

        stop.set()  # it stops beating, as a killed worker does
        thread.join(5)
        wait_for(lambda: presence.workers == 0, 10, "the silent worker to be absent after the max age")
        worker.beat(True, (0,))
        producer.flush(10)
        wait_for(lambda: presence.workers == 1, 10, "the worker beating again")
        worker.gone()  # a clean stop: a tombstone
        wait_for(lambda: presence.heartbeat("w-1") is None, 10, "the tombstone to drop the worker")
        assert presence.workers == 0
        assert len(arrivals) == 2, "each 0 -> 1 calls the hook once"
    finally:
        presence.close()
