"""What both embedder groups emit on embeddings.v1: embedding batches and deletion markers, keyed by object_id."""

from __future__ import annotations

from mmrag.messages import Envelope, Output, now_ms
from mmrag.pb.events_pb2 import EmbeddingBatch, ObjectEvent


def deletion_output(envelope: Envelope[ObjectEvent], topic: str, modality: int) -> Output:
    """A tombstone on objects.v1 becomes a ``deleted`` batch, so the updater drops the object in stream order."""
    headers = envelope.headers
    oid = headers.get("object-id") or envelope.key or ""
    batch = EmbeddingBatch(
        object_id=oid,
        version=headers.get("version", ""),
        modality=modality,  # type: ignore[arg-type]
        deleted=True,
        event_time_ms=int(headers.get("event-time-ms") or 0),
        sequencer=headers.get("sequencer", ""),
        embedded_at_ms=now_ms(),
    )
    return Output(topic, oid, batch)


def readers_output(event: ObjectEvent, topic: str, modality: int) -> Output:
    """A readers-only record on objects.v1 becomes a ``readers_only`` batch: the updater sets the readers of the
    object's rows (nothing is embedded again)."""
    batch = EmbeddingBatch(
        object_id=event.object_id,
        version=event.version,
        modality=modality,  # type: ignore[arg-type]
        readers=event.readers,
        readers_only=True,
        event_time_ms=event.event_time_ms,
        embedded_at_ms=now_ms(),
    )
    return Output(topic, event.object_id, batch)


def new_embedding_batch(event: ObjectEvent, modality: int, model_id: str, dim: int) -> EmbeddingBatch:
    """An empty batch for ``event`` (chunks are appended by the caller)."""
    return EmbeddingBatch(
        object_id=event.object_id,
        version=event.version,
        modality=modality,  # type: ignore[arg-type]
        model_id=model_id,
        dim=dim,
        event_time_ms=event.event_time_ms,
        sequencer=event.sequencer,
        media_kind=event.media_kind,
        content_type=event.content_type,
        embedded_at_ms=now_ms(),
        readers=event.readers,
    )
