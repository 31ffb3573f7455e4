"""Text embedder: text, documents and images (OCR) -> pages -> chunks by the MiniLM tokenizer -> MiniLM vectors,
plus CLIP text-tower vectors per chunk so text documents fill both halves of the joint vector."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import Counter, Histogram
from pydantic import Field, model_validator

from consumers.text_embedder.chunking import TextChunk, TooManyChunks, chunk_text
from consumers.text_embedder.extract import Budget, Extractor, Limits, Ocr
from consumers.text_embedder.lanes import HeavyObject, LightLimits, forward
from mmrag.clip import ClipEncoder
from mmrag.embedding_batches import deletion_output, new_embedding_batch, readers_output
from mmrag.errors import PermanentError
from mmrag.messages import Envelope, Output
from mmrag.metrics import LATENCY_BUCKETS
from mmrag.object_store import ObjectStore
from mmrag.pb.events_pb2 import Chunk, MediaKind, Modality, ObjectEvent
from mmrag.read_ahead import ReadAhead, object_reads, size_refusal
from mmrag.runner import ItemResult
from mmrag.settings import BaseServiceSettings, S3Settings, SpaceSettings
from mmrag.text_encoder import MAX_TOKENS, TOKEN_BUDGET, MiniLMEncoder

log = logging.getLogger(__name__)
STAGE = "text_embedder"

EXTRACT_SECONDS = Histogram(
    "mmrag_extract_seconds", "Extraction + chunking per object", ["kind"], buckets=LATENCY_BUCKETS
)
EMBED_SECONDS = Histogram(
    "mmrag_text_embed_seconds", "Model time per handled batch", ["model"], buckets=LATENCY_BUCKETS
)
CHUNKS = Counter("mmrag_text_chunks_total", "Chunks embedded")
OCR_EMPTY = Counter("mmrag_ocr_empty_total", "Images whose OCR found no text (indexed by the vision group only)")
FORWARDED = Counter(
    "mmrag_heavy_lane_forwarded_total", "Objects the light lane forwarded to the heavy lane, by limit", ["setting"]
)


class TextEmbedderSettings(BaseServiceSettings, S3Settings, SpaceSettings):
    group: str = "embedder-text"
    lane: Literal["all", "light", "heavy"] = Field(
        default="all",
        description="all: one group does every object; light: group <group>, objects over a MMRAG_LIGHT_* limit "
        "are forwarded to objects.heavy.v1 in the batch's transaction; heavy: group <group>-heavy, reads "
        "objects.heavy.v1 under the hard limits only. Deployments run a light and a heavy lane",
    )
    light_max_bytes: int = Field(
        default=128 << 10, description="light lane: objects larger (the event's size; a DOCX's unpacked body) go heavy"
    )
    light_max_pages: int = Field(default=20, description="light lane: PDFs of more pages go heavy")
    light_max_ocr_pixels: int = Field(
        default=4_000_000, description="light lane: objects needing more pixels OCR'd go heavy (an A4 page: 3.9 Mpx)"
    )
    light_max_chunks: int = Field(default=64, description="light lane: objects of more chunks go heavy")
    light_budget_s: float = Field(
        default=2.0, description="light lane: an object still extracting after this long goes heavy"
    )
    heavy_nice: int = Field(
        default=10,
        description="heavy lane: niceness added to the process (and its Tesseract runs), so on a shared host it "
        "takes the CPU the light lane leaves; 0 = the same priority",
    )
    chunk_tokens: int = Field(default=MAX_TOKENS, le=MAX_TOKENS, description="MiniLM reads at most 256 tokens")
    chunk_overlap: int = 32
    token_budget: int = Field(
        default=TOKEN_BUDGET,
        description="padded tokens per MiniLM forward pass (and a pass's worth of objects extracted at a time)",
    )
    max_chunks: int = Field(default=2000, description="an object with more chunks goes to the DLQ (counted lazily)")
    max_pages: int = Field(default=500, description="a PDF with more pages goes to the DLQ before any is read")
    max_text_bytes: int = Field(default=8 << 20, description="text objects over this size (the event's) are refused")
    max_document_bytes: int = Field(default=64 << 20, description="PDF/DOCX/HTML over this size are refused")
    max_image_bytes: int = Field(default=32 << 20, description="images to OCR over this size are refused")
    max_text_chars: int = Field(default=8_000_000, description="extracted text beyond this many characters: refused")
    max_unpacked_bytes: int = Field(default=64 << 20, description="a DOCX body unpacking to more is refused")
    max_ocr_pixels: int = Field(default=12_000_000, description="pages and images are scaled down to this for OCR")
    max_ocr_pages: int = Field(
        default=100,
        description="most pages of one PDF OCR'd (pages without a text layer; blank ones are skipped, not counted); "
        "a PDF needing more goes to the DLQ, before any OCR when its page objects show it",
    )
    extract_budget_s: float = Field(
        default=120.0, description="time one object may take to extract and chunk; over it -> DLQ naming the budget"
    )
    fetch_budget_bytes: int = Field(
        default=256 << 20, description="bytes of a batch's objects read ahead and not yet extracted (event sizes)"
    )
    ocr_images: bool = True
    ocr_languages: str = "eng"
    ocr_timeout_s: float = 60
    fetch_workers: int = Field(
        default=2,
        description="object reads in flight; more reader threads pre-empt the CPU model's threads and cost it more "
        "than the reads save (bench/embedders.py: text 0.74 of bare with 8, 0.92 with 2)",
    )
    extract_workers: int = Field(default=2, description="objects extracted and chunked in parallel (CPU)")
    extract_overlap: bool = Field(
        default=False,
        description="embed extracted text while the pool extracts the rest; worth it when the model runs on an "
        "accelerator, not on CPU, where the model already uses every core and overlap only makes them contend",
    )

    @model_validator(mode="before")
    @classmethod
    def _heavy_lane_batches_one_object(cls, data: Any) -> Any:
        """The heavy lane takes one object per batch unless MMRAG_MAX_BATCH says otherwise: each of its objects
        fills forward passes alone, and in a batch it would wait for the slowest (a 1 MB text behind a scan)."""
        if isinstance(data, dict) and data.get("lane") == "heavy" and "max_batch" not in data:
            return {**data, "max_batch": 1}
        return data

    @property
    def light_limits(self) -> LightLimits | None:
        """The light lane's limits; None in the other lanes (no object is forwarded)."""
        if self.lane != "light":
            return None
        s = self
        return LightLimits(
            s.light_max_bytes, s.light_max_pages, s.light_max_ocr_pixels, s.light_max_chunks, s.light_budget_s
        )

    @property
    def lane_group(self) -> str:
        return f"{self.group}-heavy" if self.lane == "heavy" else self.group

    @property
    def limits(self) -> Limits:
        return Limits(
            self.max_pages, self.max_text_chars, self.max_unpacked_bytes, self.max_ocr_pixels, self.max_ocr_pages
        )

    def max_bytes(self, kind: int) -> int:
        """The size limit of an object of this media kind (checked from its event, before it is read)."""
        if kind == MediaKind.MEDIA_KIND_IMAGE:
            return self.max_image_bytes
        return self.max_document_bytes if kind == MediaKind.MEDIA_KIND_DOCUMENT else self.max_text_bytes


@dataclass(frozen=True)
class _Pending:
    index: int
    event: ObjectEvent
    chunks: list[TextChunk]
    pages: list[int]


class TextEmbedder:
    """Handler of the ``embedder-text`` group; never imports confluent_kafka."""

    stage = STAGE

    def __init__(
        self,
        settings: TextEmbedderSettings,
        store: ObjectStore,
        encoder: MiniLMEncoder,
        clip: ClipEncoder | None,
        ocr: Ocr,
    ) -> None:
        self.settings = settings
        self.store = store
        self.encoder = encoder
        self.clip = clip
        self.ocr = ocr
        self.light = settings.light_limits
        self.extractor = Extractor(ocr, settings.limits, self.light)
        self.topic = settings.topics.embeddings
        self.heavy_topic = settings.topics.objects_heavy
        self._pool: ThreadPoolExecutor | None = None
        self._fetch_pool: ThreadPoolExecutor | None = None
        self.kinds = {MediaKind.MEDIA_KIND_TEXT, MediaKind.MEDIA_KIND_DOCUMENT}
        if settings.ocr_images:
            self.kinds.add(MediaKind.MEDIA_KIND_IMAGE)

    def warm_up(self) -> None:
        self._pool = ThreadPoolExecutor(self.settings.extract_workers, thread_name_prefix="extract")
        self._fetch_pool = ThreadPoolExecutor(self.settings.fetch_workers, thread_name_prefix="fetch")
        self.encoder.warm_up()
        if self.clip is not None:
            self.clip.warm_up()
        warm = getattr(self.ocr, "warm_up", None)
        if self.settings.ocr_images and warm is not None:
            warm()

    def handle(self, batch: Sequence[Envelope[ObjectEvent]]) -> list[ItemResult]:
        """One result per envelope: a batch per text-bearing object, a deletion per tombstone, [] for the rest; in
        the light lane, an object over a light limit is forwarded to the heavy lane instead, and so is every
        tombstone (after its deletion), so the heavy lane deletes after the versions it still holds."""
        assert self._pool is not None and self._fetch_pool is not None, "warm_up() starts the pools"
        results: list[ItemResult] = []
        todo: list[tuple[int, ObjectEvent]] = []
        for i, env in enumerate(batch):
            results.append([])
            if env.value is None:
                deletion = deletion_output(env, self.topic, Modality.MODALITY_TEXT)
                follow = [] if self.light is None else [forward(env, self.heavy_topic, "a delete follows its versions")]
                results[i] = [deletion, *follow]
            elif env.value.readers_only:  # forwarded like a delete: the heavy lane applies it after its versions
                readers = readers_output(env.value, self.topic, Modality.MODALITY_TEXT)
                follow = [] if self.light is None else [forward(env, self.heavy_topic, "readers follow versions")]
                results[i] = [readers, *follow]
            elif env.value.media_kind in self.kinds:
                results[i] = self._over_size(env.value) or self._heavy_by_size(env) or []
                if not results[i]:
                    todo.append((i, env.value))
        reads = self._read_ahead([event for _, event in todo])
        # Extraction is CPU work: with overlap it runs beside the model; without, a pass's worth of objects is
        # extracted (in parallel), then embedded, while the reads of the later objects go on arriving.
        budget = self.settings.token_budget
        group = len(todo) if self.settings.extract_overlap else max(1, budget // self.settings.chunk_tokens)
        pending: list[_Pending] = []
        for start in range(0, len(todo), group):
            extracting = [
                (i, self._pool.submit(self._chunked, i, event, reads, start + n))
                for n, (i, event) in enumerate(todo[start : start + group])
            ]
            if not self.settings.extract_overlap:
                wait([future for _, future in extracting])
            for i, future in extracting:
                try:
                    pending += future.result()
                except PermanentError as exc:
                    results[i] = exc
                except HeavyObject as exc:
                    results[i] = self._forwarded(batch[i], exc)
                # a forward pass is full when no further chunk of the largest size would fit
                if sum(c.tokens for p in pending for c in p.chunks) > budget - self.settings.chunk_tokens:
                    self._embed(pending, results)
                    pending = []
        self._embed(pending, results)
        return results

    def _read_ahead(self, events: list[ObjectEvent]) -> ReadAhead:
        """Reads of the batch's objects, queued in order within MMRAG_FETCH_BUDGET_BYTES."""
        assert self._fetch_pool is not None, "warm_up() starts the pools"
        return object_reads(self._fetch_pool, self.store, events, self.settings.fetch_budget_bytes)

    def _over_size(self, event: ObjectEvent) -> PermanentError | None:
        """Refuses an object by its event's size before any byte of it is read."""
        kind = event.media_kind
        setting = {MediaKind.MEDIA_KIND_IMAGE: "IMAGE", MediaKind.MEDIA_KIND_DOCUMENT: "DOCUMENT"}.get(kind, "TEXT")
        return size_refusal(event, self.settings.max_bytes(kind), STAGE, f"MMRAG_MAX_{setting}_BYTES")

    def _heavy_by_size(self, env: Envelope[ObjectEvent]) -> list[Output]:
        """The light lane's forward of an object its event already shows to be over MMRAG_LIGHT_MAX_BYTES, unread."""
        assert env.value is not None
        try:
            if self.light is not None:
                self.light.by_event(env.value)
        except HeavyObject as exc:
            return self._forwarded(env, exc)
        return []

    def _forwarded(self, env: Envelope[ObjectEvent], heavy: HeavyObject) -> list[Output]:
        FORWARDED.labels(heavy.setting).inc()
        log.info("%s: %s to the heavy lane: %s", STAGE, heavy.subject, heavy.reason)
        return [forward(env, self.heavy_topic, heavy.reason)]

    def _chunked(self, index: int, event: ObjectEvent, reads: ReadAhead, n: int) -> list[_Pending]:
        try:
            data = reads.result(n)
            started = time.perf_counter()
            chunks, numbers = self._chunks(event, data)
            EXTRACT_SECONDS.labels(MediaKind.Name(event.media_kind)).observe(time.perf_counter() - started)
        finally:
            reads.release(n)
        if not chunks:
            if event.media_kind == MediaKind.MEDIA_KIND_IMAGE:
                OCR_EMPTY.inc()  # a picture without words: the vision group indexes it
                return []
            raise PermanentError(
                STAGE, event.object_id, "no text to index (empty or whitespace only)", "upload a document with text"
            )
        return [_Pending(index, event, chunks, numbers)]

    def _chunks(self, event: ObjectEvent, data: bytes) -> tuple[list[TextChunk], list[int]]:
        """Chunks and their page numbers, page by page; stops (PermanentError) at the chunk cap or the time budget,
        before the rest of the object is extracted or tokenized."""
        s = self.settings
        light_s = None if self.light is None else self.light.budget_s
        budget = Budget(event.object_id, s.extract_budget_s, light_s=light_s)
        cap = s.max_chunks if self.light is None else min(s.max_chunks, self.light.max_chunks)
        tokenizer = self.encoder.load_tokenizer()
        chunks: list[TextChunk] = []
        numbers: list[int] = []
        for page in self.extractor.pages(event.media_kind, data, event.object_id, event.content_type, budget):
            try:
                room = cap - len(chunks)
                found = chunk_text(page.text, tokenizer, s.chunk_tokens, s.chunk_overlap, room, budget.check)
            except TooManyChunks as exc:
                if cap < s.max_chunks:
                    name = "MMRAG_LIGHT_MAX_CHUNKS"
                    reason = f"more than {cap} chunks, over the light lane's {name}={cap}"
                    raise HeavyObject(event.object_id, name, reason) from exc
                raise PermanentError(
                    STAGE,
                    event.object_id,
                    f"more than the limit of {s.max_chunks} chunks (stopped at page {page.number}, "
                    f"{exc.tokens} tokens into it)",
                    "split the document or raise MMRAG_MAX_CHUNKS",
                ) from exc
            for c in found:
                chunks.append(TextChunk(len(chunks), c.text, c.char_start, c.char_end, c.tokens))
                numbers.append(page.number)
        return chunks, numbers

    def _embed(self, pending: list[_Pending], results: list[ItemResult]) -> None:
        if not pending:
            return
        texts = [c.text for p in pending for c in p.chunks]
        with EMBED_SECONDS.labels("minilm").time():
            minilm = iter(self.encoder.encode(texts, token_budget=self.settings.token_budget))
        with EMBED_SECONDS.labels("clip-text").time():
            clip = iter(self.clip.encode_texts(texts)) if self.clip is not None and texts else None
        CHUNKS.inc(len(texts))
        for p in pending:
            out = new_embedding_batch(p.event, Modality.MODALITY_TEXT, self.encoder.model_id, self.encoder.dim)
            if self.clip is not None:
                out.clip_model_id = self.clip.model_id
            for c, page in zip(p.chunks, p.pages, strict=True):
                chunk = Chunk(
                    index=c.index,
                    text=c.text,
                    char_start=c.char_start,
                    char_end=c.char_end,
                    page=page,
                    vector=next(minilm).tolist(),
                )
                if clip is not None:
                    chunk.clip_text_vector.extend(next(clip).tolist())
                out.chunks.append(chunk)
            results[p.index] = [Output(self.topic, p.event.object_id, out)]
