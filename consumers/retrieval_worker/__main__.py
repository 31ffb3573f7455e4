"""`python -m consumers.retrieval_worker`: answers search requests for one shard (MMRAG_SHARD), from the collection
of the space each request names (its own space's is opened at warm-up, another one on first use)."""

from __future__ import annotations

import sys
from functools import partial

from consumers.retrieval_worker.handler import RetrievalWorkerSettings, keyword_shard
from consumers.retrieval_worker.request_loop import request_loop
from consumers.retrieval_worker.spaces import ShardSpace, SpaceOpener
from mmrag.dependency_watch import ping_milvus, watch
from mmrag.milvus_index import MilvusIndex
from mmrag.pb.events_pb2 import SearchRequest
from mmrag.runner import StageRunner
from mmrag.service import service_main
from mmrag.space import space_from_settings
from mmrag.telemetry import Probes


def milvus_opener(settings: RetrievalWorkerSettings) -> SpaceOpener:
    """Opens the existing collection of another space (never creates one); its keyword index builds in the
    background, so the first request for a space waits for no more than Milvus' load."""

    def open_space(space_id: str, space_name: str) -> ShardSpace:
        collection = settings.collection_for(space_id, space_name)
        token = settings.milvus_token.get_secret_value()
        index = MilvusIndex(settings.milvus_uri, collection, 0, token, create=False)
        index.start()
        keywords = keyword_shard(settings, index)
        if keywords is not None:
            keywords.start(wait=False)
        return ShardSpace(space_id, space_name, index, keywords)

    return open_space


def build(settings: RetrievalWorkerSettings, probes: Probes) -> StageRunner[SearchRequest]:
    space = space_from_settings(settings)
    index = MilvusIndex.for_space(settings, space, settings.space_name)
    # without Milvus the shard still answers from its keyword side index: ready, its detail says degraded
    ping = partial(ping_milvus, settings, settings.dependency_timeout_s)
    watch(probes, settings, "milvus", ping, degraded_only=True)
    return request_loop(settings, space.id, index, probes, milvus_opener(settings))


def main(argv: list[str] | None = None) -> int:
    return service_main("retrieval_worker", RetrievalWorkerSettings, build, argv)


if __name__ == "__main__":
    sys.exit(main())
