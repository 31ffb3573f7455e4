"""Vision embedder: image objects -> safe decode -> CLIP image vectors (micro-batched) on embeddings.v1."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from PIL import Image

from mmrag.clip import ClipEncoder
from mmrag.embedding_batches import deletion_output, embedding_output
from mmrag.errors import PermanentError
from mmrag.images import decode_image
from mmrag.messages import Envelope, Output
from mmrag.object_store import ObjectStore
from mmrag.pb.events_pb2 import Chunk, MediaKind, Modality, ObjectEvent
from mmrag.runner import ItemResult
from mmrag.settings import BaseServiceSettings, S3Settings, SpaceSettings

log = logging.getLogger(__name__)
STAGE = "vision_embedder"


class VisionEmbedderSettings(BaseServiceSettings, S3Settings, SpaceSettings):
    group: str = "embedder-vision"
    device: str | None = None
    precision: str = "auto"


class VisionEmbedder:
    """Handler of the ``embedder-vision`` group: one CLIP forward pass per micro-batch."""

    stage = STAGE

    def __init__(self, settings: VisionEmbedderSettings, store: ObjectStore, encoder: ClipEncoder) -> None:
        self.settings = settings
        self.store = store
        self.encoder = encoder
        self.topic = settings.topics.embeddings

    def warm_up(self) -> None:
        self.encoder.warm_up()

    def handle(self, batch: Sequence[Envelope[ObjectEvent]]) -> list[ItemResult]:
        results: list[ItemResult] = []
        pending: list[tuple[int, ObjectEvent, Image.Image]] = []
        for i, env in enumerate(batch):
            if env.value is None:
                results.append([deletion_output(env, self.topic, Modality.MODALITY_IMAGE)])
                continue
            results.append([])
            if env.value.media_kind != MediaKind.MEDIA_KIND_IMAGE:
                continue  # text and documents belong to the text group
            event = env.value
            try:
                data = self.store.get(event.bucket, event.key, event.version_id)
                pending.append((i, event, decode_image(data, event.object_id, STAGE)))
            except PermanentError as exc:
                results[i] = exc
        vectors = self.encoder.encode_images([img for _, _, img in pending])
        for (i, event, _), vector in zip(pending, vectors, strict=True):
            out = embedding_output(event, self.topic, Modality.MODALITY_IMAGE, self.encoder.model_id, self.encoder.dim)
            out.chunks.append(Chunk(index=0, vector=vector.tolist()))
            results[i] = [Output(self.topic, event.object_id, out)]
        return results
