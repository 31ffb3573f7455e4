"""`python -m index_updater`: fuses embeddings per object and upserts them into Milvus and/or vectors.v1."""

from __future__ import annotations

import sys
from functools import partial

from index_updater.handler import IndexUpdater, IndexUpdaterSettings
from index_updater.status_gate import StatusGate
from mmrag.applied_offsets import AppliedOffsets
from mmrag.changelog import ChangelogReader
from mmrag.dependency_watch import ping_milvus, watch
from mmrag.messages import proto_decoder
from mmrag.milvus_index import MilvusIndex
from mmrag.pb.events_pb2 import EmbeddingBatch
from mmrag.runner import StageRunner
from mmrag.service import service_main
from mmrag.space import space_from_settings
from mmrag.space_catalog import SpaceSpec, spec_properties
from mmrag.telemetry import Probes
from mmrag.vector_index import IndexWriter
from mmrag.vector_log import VectorLogTable


def build(settings: IndexUpdaterSettings, probes: Probes) -> StageRunner[EmbeddingBatch]:
    space = space_from_settings(settings)
    changelog = ChangelogReader(settings.bootstrap_servers, "index_updater")
    topics = settings.topics
    index: IndexWriter
    if settings.index_backend == "faiss":
        index = VectorLogTable(
            lambda: changelog.read(topics.vectors, range(changelog.partition_count(topics.vectors))),
            lambda: changelog.partition_count(topics.embeddings),
            space.id,
        )
    else:
        name = settings.space_name
        spec = SpaceSpec.of(settings, space, name, settings.collection_for(space.id, name))
        index = MilvusIndex.for_space(settings, space, name, spec_properties(spec))  # serving reads the spec
        watch(
            probes, settings, "milvus", partial(ping_milvus, settings, settings.dependency_timeout_s)
        )  # every batch is upserted into it
    gate = None
    if settings.produces_vectors:
        applied = AppliedOffsets(
            settings.bootstrap_servers, topics.vectors_applied, settings.faiss_applied_max_age_s, "index_updater"
        )
        gate = StatusGate(
            applied,
            topics.index_status,
            topics.vectors,
            settings.shards,
            settings.faiss_applied_wait_s,
            lambda: changelog.end_offsets(topics.vectors),
        )
    handler = IndexUpdater(settings, space, index, lambda: changelog.partition_count(topics.vectors), gate)
    decoders = {settings.topics.embeddings: proto_decoder(EmbeddingBatch, handler.stage)}
    return StageRunner(
        settings,
        handler,
        group=settings.consumer_group(settings.group),
        decoders=decoders,
        transactional=False,
        probes=probes,
    )


def main(argv: list[str] | None = None) -> int:
    return service_main("index_updater", IndexUpdaterSettings, build, argv)


if __name__ == "__main__":
    sys.exit(main())
