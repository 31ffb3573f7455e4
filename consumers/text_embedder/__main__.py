"""`python -m consumers.text_embedder`: the embedder-text consumer group (MMRAG_LANE=heavy: embedder-text-heavy, on
objects.heavy.v1)."""

from __future__ import annotations

import os
import sys

from consumers.text_embedder.extract import TesseractOcr
from consumers.text_embedder.handler import TextEmbedder, TextEmbedderSettings
from mmrag.dependency_watch import watch
from mmrag.messages import proto_decoder
from mmrag.object_store import S3ObjectStore
from mmrag.pb.events_pb2 import ObjectEvent
from mmrag.runner import StageRunner
from mmrag.service import service_main
from mmrag.space import space_clip_encoder, space_minilm_encoder
from mmrag.telemetry import Probes


def build(settings: TextEmbedderSettings, probes: Probes) -> StageRunner[ObjectEvent]:
    if settings.lane == "heavy" and settings.heavy_nice:
        os.nice(settings.heavy_nice)  # below the light lane's processes on a shared host; Tesseract inherits it
    clip = space_clip_encoder(settings) if settings.clip_text_for_text else None
    store = S3ObjectStore(settings, "text_embedder")
    watch(probes, settings, "object store", store.client.list_buckets)  # every document is read from it
    handler = TextEmbedder(
        settings,
        store,
        space_minilm_encoder(settings),
        clip,
        TesseractOcr(settings.ocr_languages, settings.ocr_timeout_s),
    )
    source = settings.topics.objects_heavy if settings.lane == "heavy" else settings.topics.objects
    decoders = {source: proto_decoder(ObjectEvent, handler.stage)}
    return StageRunner(
        settings,
        handler,
        group=settings.consumer_group(settings.lane_group),
        decoders=decoders,
        transactional=True,
        probes=probes,
    )


def main(argv: list[str] | None = None) -> int:
    return service_main("text_embedder", TextEmbedderSettings, build, argv)


if __name__ == "__main__":
    sys.exit(main())
