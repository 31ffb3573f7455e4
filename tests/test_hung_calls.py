"""A Kafka call that hangs past its timeout (librdkafka waiting on a decommissioned coordinator during a broker
failover) costs the batch a redo, not the process: the producer is replaced by one with the same transactional id,
whose init_transactions fences the hung one. Only when that keeps happening does the process restart."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from mmrag import delivery
from mmrag.delivery import Delivery, Encoded, NotDeliveredError
from mmrag.watchdog import HungCallError, call_within

pytestmark = pytest.mark.unit


def test_call_within_returns_raises_or_reports_the_hang() -> None:
    assert call_within("normalizer", "flush", 1.0, lambda: 7) == 7
    missing: dict[str, int] = {}
    with pytest.raises(KeyError):
        call_within("normalizer", "flush", 1.0, lambda: missing["key"])
    release = threading.Event()
    with pytest.raises(HungCallError) as hung:
        call_within("normalizer", "send_offsets_to_transaction", 0.2, lambda: release.wait(30))
    release.set()
    assert "normalizer" in str(hung.value) and "send_offsets_to_transaction" in str(hung.value)
    assert hung.value.what == "send_offsets_to_transaction"


class Producer:
    """Records the transactional calls; ``hang`` names the call that blocks until ``release`` is set."""

    made: list[Producer] = []

    def __init__(self, hang: str | None, release: threading.Event) -> None:
        self.hang = hang
        self.release = release
        self.calls: list[str] = []
        Producer.made.append(self)

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.hang:
            self.release.wait(60)

    def init_transactions(self, _timeout: float) -> None:
        self._call("init_transactions")

    def begin_transaction(self) -> None:
        self._call("begin_transaction")

    def produce(self, topic: str, **kwargs: Any) -> None:
        self._call(f"produce {topic}")
        kwargs["on_delivery"](None, None)

    def flush(self, _timeout: float) -> int:
        self._call("flush")
        return 0

    def send_offsets_to_transaction(self, _offsets: Any, _metadata: Any, _timeout: float) -> None:
        self._call("send_offsets_to_transaction")

    def commit_transaction(self, _timeout: float) -> None:
        self._call("commit_transaction")

    def abort_transaction(self, _timeout: float) -> None:
        self._call("abort_transaction")


OUT = [Encoded("t.embeddings.v1", b"b/k", b"v", [], None)]


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    monkeypatch.setattr(delivery, "COORDINATOR_CALL_S", 0.1)
    monkeypatch.setattr(delivery, "HANG_MARGIN_S", 0.2)
    Producer.made = []
    release = threading.Event()
    yield release
    release.set()


def test_a_hung_send_offsets_replaces_the_producer_and_the_batch_goes_on_the_new_one(quick: threading.Event) -> None:
    hangs = iter(["send_offsets_to_transaction", None, None])
    overruns: list[str] = []
    dlv = Delivery(
        lambda: Producer(next(hangs), quick),
        transactional=True,
        stage="normalizer",
        commit_deadline_s=5,
        on_overrun=overruns.append,
    )
    dlv.start_transactions()
    dlv.deliver(OUT, offsets=["p0@5"], group_metadata=object())  # returns: delivered again on a new producer
    hung, fresh = Producer.made
    assert dlv.producer is fresh and dlv.replaced == 1
    # the hung one is never touched again (no abort on it); the new one fenced it with init_transactions, then
    # carried the whole batch in a transaction of its own
    assert hung.calls[-1] == "send_offsets_to_transaction" and "abort_transaction" not in hung.calls
    assert fresh.calls == [
        "init_transactions",
        "begin_transaction",
        "produce t.embeddings.v1",
        "flush",
        "send_offsets_to_transaction",
        "commit_transaction",
    ]
    assert overruns == []


def test_producers_hanging_again_and_again_end_in_a_restart(quick: threading.Event) -> None:
    overruns: list[str] = []
    dlv = Delivery(
        lambda: Producer("commit_transaction", quick),
        transactional=True,
        stage="index-updater",
        commit_deadline_s=0.1,
        on_overrun=overruns.append,
    )
    dlv.start_transactions()
    for _ in range(3):  # each batch: hung, replaced, hung again on the new one -> not delivered (back-off)
        with pytest.raises(NotDeliveredError, match="commit_transaction still blocked.*producer replaced"):
            dlv.deliver(OUT, offsets=["p0@1"], group_metadata=object())
    assert len(overruns) == 1 and "commit_transaction still blocked" in overruns[0]
    assert f"{delivery.MAX_REPLACED} producers replaced already" in overruns[0]
