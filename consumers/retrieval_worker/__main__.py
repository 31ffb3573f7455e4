"""`python -m consumers.retrieval_worker`: answers search requests for one shard (MMRAG_SHARD)."""

from __future__ import annotations

import sys

from consumers.retrieval_worker.handler import RetrievalWorker, RetrievalWorkerSettings
from mmrag.messages import proto_decoder
from mmrag.milvus_index import MilvusIndex
from mmrag.pb.events_pb2 import SearchRequest
from mmrag.request_reply import FAST_CONSUMER, FAST_PRODUCER
from mmrag.runner import StageRunner
from mmrag.service import service_main
from mmrag.space import space_from_settings
from mmrag.telemetry import Probes


def build(settings: RetrievalWorkerSettings, probes: Probes) -> StageRunner[SearchRequest]:
    space = space_from_settings(settings)
    handler = RetrievalWorker(settings, space.id, MilvusIndex.for_space(settings, space))
    decoders = {settings.topics.search_requests: proto_decoder(SearchRequest, handler.stage)}
    return StageRunner(
        settings,
        handler,
        group=settings.group,
        decoders=decoders,
        transactional=False,
        probes=probes,
        consumer_overrides=FAST_CONSUMER,
        producer_overrides=FAST_PRODUCER,
    )


def main(argv: list[str] | None = None) -> int:
    return service_main("retrieval_worker", RetrievalWorkerSettings, build, argv)


if __name__ == "__main__":
    sys.exit(main())
