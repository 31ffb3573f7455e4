"""`python -m consumers.faiss_worker`: answers search requests for one shard (MMRAG_SHARD) from a Faiss index it
materializes from that shard's partition of vectors.v1 (group retrieval-shard-<k>, like the Milvus workers)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from pydantic import Field

from consumers.faiss_worker.shard import FaissShard
from consumers.retrieval_worker.handler import RetrievalWorkerSettings
from consumers.retrieval_worker.request_loop import request_loop
from mmrag.applied_offsets import AppliedSender
from mmrag.faiss_index import FaissSettings
from mmrag.kafka_clients import make_producer
from mmrag.pb.events_pb2 import SearchRequest
from mmrag.request_reply import FAST_PRODUCER
from mmrag.runner import StageRunner
from mmrag.service import service_main
from mmrag.space import space_from_settings
from mmrag.telemetry import Probes


class FaissWorkerSettings(RetrievalWorkerSettings, FaissSettings):
    faiss_snapshot_dir: Path | None = Field(default=None, description="where snapshots go; unset = <state_dir>/faiss")
    faiss_snapshot_interval_s: float = Field(default=60.0, gt=0, description="seconds between snapshots")
    faiss_snapshot_max_age_s: float = Field(
        default=12 * 3600.0,
        description="an older snapshot is not loaded (the shard is rebuilt from the log): vectors.v1 keeps "
        "tombstones for delete.retention.ms (1 day), a snapshot older than that could miss deletes",
    )

    faiss_applied_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="how often the worker says on vectors.applied.v1 how far it applied (at once after each apply); "
        "the index updater's statuses wait for it",
    )

    @property
    def snapshot_root(self) -> Path:
        return self.faiss_snapshot_dir or self.state_dir / "faiss"


class FaissWorker:
    """The request loop, with the shard closed (last snapshot) when it ends."""

    def __init__(self, runner: StageRunner[SearchRequest], shard: FaissShard, applied: AppliedSender) -> None:
        self.runner = runner
        self.shard = shard
        self.applied = applied

    def run(self, stop: threading.Event) -> None:
        self.applied.start()
        try:
            self.runner.run(stop)
        finally:
            self.applied.close()  # the updater stops waiting for this replica before it stops applying
            self.shard.close()


def build(settings: FaissWorkerSettings, probes: Probes) -> FaissWorker:
    space = space_from_settings(settings)
    shard = FaissShard(
        settings.bootstrap_servers,
        settings.topics.vectors,
        settings.shard,
        space.id,
        space.dim,
        settings,
        settings.snapshot_root,
        settings.faiss_snapshot_interval_s,
        settings.faiss_snapshot_max_age_s,
        keywords=settings.keyword_refresh_s > 0,
        text_dim=space.text_dim,
    )
    probes.add_check("vectors", shard.readiness)
    applied = AppliedSender(
        make_producer(settings.bootstrap_servers, None, **FAST_PRODUCER),
        settings.topics.vectors_applied,
        f"{settings.instance_id}.{os.getpid()}.shard-{settings.shard}",  # pods share no host name, processes do
        settings.shard,
        lambda: (shard.next_offset, shard.caught_up.is_set()),
        settings.faiss_applied_interval_s,
    )
    shard.on_applied = applied.advanced
    runner = request_loop(settings, space.id, shard, probes)
    return FaissWorker(runner, shard, applied)


def main(argv: list[str] | None = None) -> int:
    return service_main("faiss_worker", FaissWorkerSettings, build, argv)


if __name__ == "__main__":
    sys.exit(main())
