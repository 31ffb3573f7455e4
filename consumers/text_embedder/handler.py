"""Text embedder: text objects -> chunks (MiniLM tokenizer spans) -> MiniLM vectors on embeddings.v1."""

from __future__ import annotations

import codecs
import logging
from collections.abc import Sequence

from pydantic import Field

from consumers.text_embedder.chunking import TextChunk, chunk_text
from mmrag.embedding_batches import deletion_output, embedding_output
from mmrag.errors import PermanentError
from mmrag.messages import Envelope, Output
from mmrag.object_store import ObjectStore
from mmrag.pb.events_pb2 import Chunk, MediaKind, Modality, ObjectEvent
from mmrag.runner import ItemResult
from mmrag.settings import BaseServiceSettings, S3Settings
from mmrag.text_encoder import MAX_TOKENS, MiniLMEncoder

log = logging.getLogger(__name__)
STAGE = "text_embedder"
TEXT_KINDS = {MediaKind.MEDIA_KIND_TEXT}


class TextEmbedderSettings(BaseServiceSettings, S3Settings):
    group: str = "embedder-text"
    chunk_tokens: int = Field(default=MAX_TOKENS, le=MAX_TOKENS, description="MiniLM reads at most 256 tokens")
    chunk_overlap: int = 32


def decode_text(data: bytes, object_id: str) -> str:
    """UTF-8 (BOM allowed) text; other encodings and binary data raise PermanentError."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PermanentError(
            STAGE, object_id, f"not UTF-8 text ({exc.reason} at byte {exc.start})", "re-upload it as UTF-8"
        ) from exc
    if "\x00" in text:
        raise PermanentError(STAGE, object_id, "binary data (NUL bytes) in a text object", "upload real text")
    return text


class TextEmbedder:
    """Handler of the ``embedder-text`` group; never imports confluent_kafka."""

    stage = STAGE

    def __init__(self, settings: TextEmbedderSettings, store: ObjectStore, encoder: MiniLMEncoder) -> None:
        self.settings = settings
        self.store = store
        self.encoder = encoder
        self.topic = settings.topics.embeddings

    def warm_up(self) -> None:
        self.encoder.warm_up()

    def handle(self, batch: Sequence[Envelope[ObjectEvent]]) -> list[ItemResult]:
        """One result per envelope: a batch for text objects, a deletion for tombstones, nothing for other kinds."""
        results: list[ItemResult] = []
        pending: list[tuple[int, ObjectEvent, list[TextChunk]]] = []
        for i, env in enumerate(batch):
            if env.value is None:
                results.append([deletion_output(env, self.topic, Modality.MODALITY_TEXT)])
                continue
            results.append([])
            if env.value.media_kind not in TEXT_KINDS:
                continue  # routed to another group (vision, documents)
            try:
                pending.append((i, env.value, self._chunks(env.value)))
            except PermanentError as exc:
                results[i] = exc
        self._embed(pending, results)
        return results

    def _chunks(self, event: ObjectEvent) -> list[TextChunk]:
        text = decode_text(self.store.get(event.bucket, event.key, event.version_id), event.object_id)
        s = self.settings
        chunks = chunk_text(text, self.encoder.load_tokenizer(), s.chunk_tokens, s.chunk_overlap)
        if not chunks:
            raise PermanentError(
                STAGE, event.object_id, "no text to index (empty or whitespace only)", "upload a document with text"
            )
        return chunks

    def _embed(self, pending: list[tuple[int, ObjectEvent, list[TextChunk]]], results: list[ItemResult]) -> None:
        texts = [c.text for _, _, chunks in pending for c in chunks]
        vectors = iter(self.encoder.encode(texts))
        for i, event, chunks in pending:
            out = embedding_output(event, self.topic, Modality.MODALITY_TEXT, self.encoder.model_id, self.encoder.dim)
            for c in chunks:
                out.chunks.append(
                    Chunk(
                        index=c.index,
                        text=c.text,
                        char_start=c.char_start,
                        char_end=c.char_end,
                        vector=next(vectors).tolist(),
                    )
                )
            results[i] = [Output(self.topic, event.object_id, out)]
