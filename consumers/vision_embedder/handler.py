"""Vision embedder: image objects -> fetch (I/O threads, all of a batch at once) -> safe decode (a CPU pool) -> CLIP
image vectors in micro-batches -> embeddings.v1. Fetches always overlap the model; decoding overlaps it on CUDA and
takes turns with it on CPU, where the model already uses every core. An image that renders blank (one colour, e.g.
an SVG of scripts only) goes to the DLQ: its vector would match every other blank image and say nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from PIL import Image
from prometheus_client import Histogram
from pydantic import Field

from mmrag.clip import ClipEncoder
from mmrag.embedding_batches import deletion_output, new_embedding_batch, readers_output
from mmrag.errors import PermanentError
from mmrag.images import decode_image, require_visible
from mmrag.messages import Envelope, Output
from mmrag.metrics import LATENCY_BUCKETS
from mmrag.object_store import ObjectStore
from mmrag.pb.events_pb2 import Chunk, MediaKind, Modality, ObjectEvent
from mmrag.read_ahead import ReadAhead, object_reads, size_refusal
from mmrag.runner import ItemResult
from mmrag.settings import BaseServiceSettings, S3Settings, SpaceSettings

log = logging.getLogger(__name__)
STAGE = "vision_embedder"

DECODE_SECONDS = Histogram("mmrag_decode_seconds", "Decode per image", buckets=LATENCY_BUCKETS)
MODEL_SECONDS = Histogram("mmrag_model_seconds", "CLIP forward pass per micro-batch", buckets=LATENCY_BUCKETS)


class VisionEmbedderSettings(BaseServiceSettings, S3Settings, SpaceSettings):
    group: str = "embedder-vision"
    max_batch: int = 64
    device: str | None = None
    model_batch: int = Field(default=16, description="images per CLIP forward pass")
    max_image_bytes: int = Field(default=32 << 20, description="images over this size (the event's) are refused")
    fetch_budget_bytes: int = Field(
        default=256 << 20, description="bytes of a batch's images read ahead and not yet decoded (event sizes)"
    )
    decode_workers: int = 2
    fetch_workers: int | None = Field(
        default=None,
        description="object reads in flight; default: 16 on CUDA, 2 on CPU, where more reader threads pre-empt the "
        "model's threads and cost it more than the reads save (bench/embedders.py: 0.81 with 8, 0.87 with 1)",
    )
    decode_min_side: int = Field(default=0, description="JPEG draft decoding keeps both sides >= this; 0 = model input")
    decode_overlap: bool | None = Field(
        default=None,
        description="decode the next micro-batch while the model runs; default: on for CUDA, off on CPU, where the "
        "model already uses every core and overlapped decoding only makes the two fight over them",
    )


class VisionEmbedder:
    """Handler of the ``embedder-vision`` group."""

    stage = STAGE

    def __init__(self, settings: VisionEmbedderSettings, store: ObjectStore, encoder: ClipEncoder) -> None:
        self.settings = settings
        self.store = store
        self.encoder = encoder
        self.topic = settings.topics.embeddings
        self._pool: ThreadPoolExecutor | None = None
        self._fetch_pool: ThreadPoolExecutor | None = None
        self._min_side = settings.decode_min_side
        self._overlap = False

    def warm_up(self) -> None:
        self.encoder.warm_up()
        self._min_side = self.settings.decode_min_side or self.encoder.input_size
        log.info(
            "CLIP %s on %s in %s; JPEG draft decoding down to %d px",
            self.encoder.model_id,
            self.encoder.device,
            self.encoder.precision,
            self._min_side,
        )
        self._pool = ThreadPoolExecutor(self.settings.decode_workers, thread_name_prefix="decode")
        on_cuda = self.encoder.device.startswith("cuda")
        self._overlap = on_cuda if self.settings.decode_overlap is None else self.settings.decode_overlap
        self._fetch_pool = ThreadPoolExecutor(self.settings.fetch_workers or (16 if on_cuda else 2), "fetch")

    def handle(self, batch: Sequence[Envelope[ObjectEvent]]) -> list[ItemResult]:
        results: list[ItemResult] = []
        todo: list[tuple[int, ObjectEvent]] = []
        for i, env in enumerate(batch):
            results.append([])
            if env.value is None:
                results[i] = [deletion_output(env, self.topic, Modality.MODALITY_IMAGE)]
            elif env.value.readers_only:
                results[i] = [readers_output(env.value, self.topic, Modality.MODALITY_IMAGE)]
            elif env.value.media_kind == MediaKind.MEDIA_KIND_IMAGE:
                refused = size_refusal(env.value, self.settings.max_image_bytes, STAGE, "MMRAG_MAX_IMAGE_BYTES")
                if refused is None:
                    todo.append((i, env.value))
                else:
                    results[i] = refused
        assert self._pool is not None and self._fetch_pool is not None, "warm_up() starts the pools"
        pool = self._pool
        events = [event for _, event in todo]
        reads = object_reads(self._fetch_pool, self.store, events, self.settings.fetch_budget_bytes)
        step = self.settings.model_batch
        parts = range(0, len(todo), step)

        def decodes(start: int) -> list[Future[Image.Image]]:
            return [
                pool.submit(self._decode, event, reads, start + n)
                for n, event in enumerate(events[start : start + step])
            ]

        ahead = {start: decodes(start) for start in parts} if self._overlap else {}
        for start in parts:
            self._embed(todo[start : start + step], ahead.get(start) or decodes(start), results)
        return results

    def _decode(self, event: ObjectEvent, reads: ReadAhead, n: int) -> Image.Image:
        try:
            data = reads.result(n)
            started = time.perf_counter()
            image = require_visible(decode_image(data, event.object_id, STAGE, self._min_side), event.object_id, STAGE)
        finally:
            reads.release(n)
        DECODE_SECONDS.observe(time.perf_counter() - started)
        return image

    def _embed(
        self, todo: list[tuple[int, ObjectEvent]], loads: list[Future[Image.Image]], results: list[ItemResult]
    ) -> None:
        ready: list[tuple[int, ObjectEvent, Image.Image]] = []
        for (i, event), load in zip(todo, loads, strict=True):
            try:
                ready.append((i, event, load.result()))
            except PermanentError as exc:
                results[i] = exc
        if not ready:
            return
        with MODEL_SECONDS.time():
            vectors = self.encoder.encode_images([image for _, _, image in ready])
        for (i, event, _), vector in zip(ready, vectors, strict=True):
            out = new_embedding_batch(event, Modality.MODALITY_IMAGE, self.encoder.model_id, self.encoder.dim)
            out.chunks.append(Chunk(index=0, vector=vector.tolist()))
            results[i] = [Output(self.topic, event.object_id, out)]
