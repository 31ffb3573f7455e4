"""`python -m index_updater`: fuses embeddings per object and upserts them into Milvus."""

from __future__ import annotations

import sys

from index_updater.handler import IndexUpdater, IndexUpdaterSettings
from mmrag.messages import proto_decoder
from mmrag.milvus_index import MilvusIndex
from mmrag.pb.events_pb2 import EmbeddingBatch
from mmrag.runner import StageRunner
from mmrag.service import service_main
from mmrag.space import space_from_settings
from mmrag.telemetry import Probes


def build(settings: IndexUpdaterSettings, probes: Probes) -> StageRunner[EmbeddingBatch]:
    space = space_from_settings(settings)
    index = MilvusIndex.for_space(settings, space)
    handler = IndexUpdater(settings, space, index)
    decoders = {settings.topics.embeddings: proto_decoder(EmbeddingBatch, handler.stage)}
    return StageRunner(settings, handler, group=settings.group, decoders=decoders, transactional=False, probes=probes)


def main(argv: list[str] | None = None) -> int:
    return service_main("index_updater", IndexUpdaterSettings, build, argv)


if __name__ == "__main__":
    sys.exit(main())
