"""`python -m consumers.retrieval_worker`: answers search requests for one shard (MMRAG_SHARD)."""

from __future__ import annotations

import sys

from consumers.retrieval_worker.handler import RetrievalWorkerSettings
from consumers.retrieval_worker.request_loop import request_loop
from mmrag.milvus_index import MilvusIndex
from mmrag.pb.events_pb2 import SearchRequest
from mmrag.runner import StageRunner
from mmrag.service import service_main
from mmrag.space import space_from_settings
from mmrag.telemetry import Probes


def build(settings: RetrievalWorkerSettings, probes: Probes) -> StageRunner[SearchRequest]:
    space = space_from_settings(settings)
    return request_loop(settings, space.id, MilvusIndex.for_space(settings, space), probes)


def main(argv: list[str] | None = None) -> int:
    return service_main("retrieval_worker", RetrievalWorkerSettings, build, argv)


if __name__ == "__main__":
    sys.exit(main())
