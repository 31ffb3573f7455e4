"""A Kafka call that blocks past its limit ends the process (liveness red first) so that a restart fences it; calls
that return in time, or raise, leave no trace."""

from __future__ import annotations

import threading
import time

import pytest

from mmrag.watchdog import CallWatchdog

pytestmark = pytest.mark.unit


def test_a_call_blocked_past_its_limit_is_reported_once_with_what_hung() -> None:
    overruns: list[str] = []
    dead: list[str] = []
    fired = threading.Event()

    def on_overrun(reason: str) -> None:
        overruns.append(reason)
        fired.set()

    dog = CallWatchdog("embedder-text", on_overrun, dead.append, margin_s=0.2)
    with dog.guard("send_offsets_to_transaction", 0.3):
        assert fired.wait(5), "the watchdog did not act on a call 0.5 s past its limit"
        time.sleep(1.2)  # still blocked: no second report for the same call
    assert len(overruns) == 1 and dead == overruns
    assert "embedder-text" in overruns[0] and "send_offsets_to_transaction" in overruns[0]
    assert "still blocked" in overruns[0]


def test_calls_that_return_or_raise_in_time_are_not_reported() -> None:
    overruns: list[str] = []
    dog = CallWatchdog("index-updater", overruns.append, margin_s=0.1)
    for _ in range(5):
        with dog.guard("commit_transaction", 0.2):
            time.sleep(0.05)
    with pytest.raises(RuntimeError), dog.guard("flush", 0.2):
        raise RuntimeError("broker away")
    time.sleep(0.8)
    assert overruns == []
