"""The request loop every retrieval worker runs over its index, Milvus or Faiss: group retrieval-shard-<k>,
low-latency clients, the same reply contract."""

from __future__ import annotations

from consumers.retrieval_worker.handler import RetrievalWorker, RetrievalWorkerSettings
from consumers.retrieval_worker.spaces import SpaceOpener
from mmrag.messages import proto_decoder
from mmrag.pb.events_pb2 import SearchRequest
from mmrag.request_reply import FAST_CONSUMER, FAST_PRODUCER
from mmrag.runner import StageRunner
from mmrag.telemetry import Probes
from mmrag.vector_index import IndexSearcher


def request_loop(
    settings: RetrievalWorkerSettings,
    space_id: str,
    index: IndexSearcher,
    probes: Probes,
    opener: SpaceOpener | None = None,
) -> StageRunner[SearchRequest]:
    """``opener``: how the worker opens another space's index a request names (None: it serves its own only)."""
    handler = RetrievalWorker(settings, space_id, index, opener)
    decoders = {settings.topics.search_requests: proto_decoder(SearchRequest, handler.stage)}
    return StageRunner(
        settings,
        handler,
        group=settings.group_id(settings.group),
        decoders=decoders,
        transactional=False,
        probes=probes,
        consumer_overrides=FAST_CONSUMER,
        producer_overrides=FAST_PRODUCER,
        eager=True,
    )
