"""Which shards have a retrieval worker now: the members of each shard's consumer group, looked at in a thread.

A shard whose group has no member cannot answer; Search lists it as missing at once instead of waiting out the
deadline for it on every query. Unknown (the cluster did not answer, the group is rebalancing) counts as present:
the deadline then decides, as without this view. A killed worker stays a member until its session times out, so
its shard is known absent from then on."""

from __future__ import annotations

import logging
import threading

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from mmrag.kafka_clients import admin_config
from mmrag.settings import group_name

log = logging.getLogger(__name__)


def shard_groups(topic_prefix: str, shards: int) -> dict[int, str]:
    """The consumer group of each shard's retrieval workers (consumers.retrieval_worker: retrieval-shard-<k> of the
    deployment; one group serves every space the shard's workers open, so no space name)."""
    return {k: group_name(topic_prefix, f"retrieval-shard-{k}") for k in range(shards)}


class ShardPresence:
    def __init__(self, bootstrap: str, groups: dict[int, str], interval_s: float) -> None:
        self.groups = groups
        self.interval_s = interval_s
        self._admin = AdminClient(admin_config(bootstrap, log_level=3))
        self._absent: frozenset[int] = frozenset()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shard-presence", daemon=True)

    def start(self) -> ShardPresence:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()

    @property
    def absent(self) -> frozenset[int]:
        """The shards whose group had no member at the last look."""
        return self._absent

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._absent = self._look()
            self._stop.wait(self.interval_s)

    def _look(self) -> frozenset[int]:
        try:
            futures = self._admin.describe_consumer_groups(list(self.groups.values()), request_timeout=5)
            members = {group: len(future.result(timeout=5).members) for group, future in futures.items()}
        except (KafkaException, TimeoutError) as exc:  # unknown: every shard is waited for, as without this view
            log.debug("shard presence unknown: %s", exc)
            return frozenset()
        absent = frozenset(k for k, group in self.groups.items() if members.get(group, 1) == 0)
        if absent != self._absent:
            log.warning("retrieval shards without a worker: %s", sorted(absent) or "none")
        return absent
