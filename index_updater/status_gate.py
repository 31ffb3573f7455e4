"""With Faiss, an object's status waits until Search can find what it says (docs/architecture.md "Index backends").

The runner delivers a batch's vectors.v1 records first, then asks this gate, then delivers the index-status.v1
records and commits the offsets (mmrag/runner.py ``VisibilityGate``). The gate waits until every serving Faiss
replica of each shard a held status names has applied past everything this updater wrote to that shard's
partition (mmrag/applied_offsets.py): a status follows the records of its own batch and of every earlier one,
including a batch that was delivered but not committed before a restart (the ends are read from the log then).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mmrag.applied_offsets import AppliedOffsets
from mmrag.ids import shard_for


class StatusGate:
    """VisibilityGate of the index updater on the Faiss path."""

    def __init__(
        self,
        applied: AppliedOffsets,
        status_topic: str,
        vectors_topic: str,
        shards: int,
        timeout_s: float,
        log_ends: Callable[[], Mapping[int, int]],
    ) -> None:
        """``log_ends`` gives the end offset of each vectors.v1 partition now (read at start and on assignment)."""
        self.applied = applied
        self.topics = frozenset({status_topic})
        self.vectors_topic = vectors_topic
        self.shards = shards
        self.timeout_s = timeout_s
        self.log_ends = log_ends
        self.ends: dict[int, int] = {}  # shard -> offset after the last vectors.v1 record known written

    def start(self) -> None:
        self.applied.start()
        self.reread_ends()

    def reread_ends(self) -> None:
        """What the log holds now: records an earlier incarnation wrote whose statuses may still be to come."""
        for shard, end in self.log_ends().items():
            self.ends[shard] = max(self.ends.get(shard, 0), end)

    def wait(self, delivered: Mapping[tuple[str, int], int], held_keys: Sequence[bytes | None]) -> None:
        for (topic, partition), end in delivered.items():
            if topic == self.vectors_topic:
                self.ends[partition] = max(self.ends.get(partition, 0), end)
        shards = {shard_for(key.decode(errors="replace"), self.shards) for key in held_keys if key is not None}
        self.applied.wait({s: self.ends[s] for s in shards if s in self.ends}, self.timeout_s)
