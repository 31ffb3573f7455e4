"""`python -m consumers.vision_embedder`: the embedder-vision consumer group."""

from __future__ import annotations

import sys

from consumers.vision_embedder.handler import VisionEmbedder, VisionEmbedderSettings
from mmrag.dependency_watch import watch
from mmrag.messages import proto_decoder
from mmrag.object_store import S3ObjectStore
from mmrag.pb.events_pb2 import ObjectEvent
from mmrag.runner import StageRunner
from mmrag.service import service_main
from mmrag.space import space_clip_encoder
from mmrag.telemetry import Probes


def build(settings: VisionEmbedderSettings, probes: Probes) -> StageRunner[ObjectEvent]:
    encoder = space_clip_encoder(settings, settings.device)
    store = S3ObjectStore(settings, "vision_embedder")
    watch(probes, settings, "object store", store.client.list_buckets)  # every image is read from it
    handler = VisionEmbedder(settings, store, encoder)
    decoders = {settings.topics.objects: proto_decoder(ObjectEvent, handler.stage)}
    return StageRunner(
        settings,
        handler,
        group=settings.consumer_group(settings.group),
        decoders=decoders,
        transactional=True,
        probes=probes,
    )


def main(argv: list[str] | None = None) -> int:
    return service_main("vision_embedder", VisionEmbedderSettings, build, argv)


if __name__ == "__main__":
    sys.exit(main())
