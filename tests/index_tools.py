"""Helpers of the index tests on the real broker: a deployment's settings for index services, embedding batches
as the embedders would send them, and the index status of every object."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmrag.pb.events_pb2 import Chunk, EmbeddingBatch, IndexStatus, Modality
from mmrag.space import EmbeddingSpace
from mmrag.topics import Topics
from tests.kafka_tools import read_topic


def index_env(
    bootstrap: str, topics: Topics, clip_dir: Path, shards: int, state_dir: Path, **extra: str
) -> dict[str, str]:
    """The MMRAG_* settings an index updater and its retrieval workers share."""
    return {
        "MMRAG_BOOTSTRAP_SERVERS": bootstrap,
        "MMRAG_TOPIC_PREFIX": topics.prefix,
        "MMRAG_CLIP_MODEL_DIR": str(clip_dir),
        "MMRAG_SHARDS": str(shards),
        "MMRAG_STATE_DIR": str(state_dir),
        **extra,
    }


def text_batch(
    space: EmbeddingSpace,
    oid: str,
    version: str,
    at_ms: int,
    rng: np.random.Generator,
    chunks: int = 1,
    text: str | None = None,
) -> EmbeddingBatch:
    """A text embedding batch of ``chunks`` random MiniLM vectors, texts naming the object, version and chunk (or
    ``text``, spanning its whole length, in each)."""
    return EmbeddingBatch(
        object_id=oid,
        version=version,
        modality=Modality.MODALITY_TEXT,
        model_id=space.text_model_id,
        dim=space.text_dim,
        chunks=[
            Chunk(
                index=i,
                text=text if text is not None else f'{oid} {version} chunk {i} "ü" \\',
                char_end=len(text) if text is not None else 0,
                vector=rng.standard_normal(space.text_dim).tolist(),
            )
            for i in range(chunks)
        ],
        event_time_ms=at_ms,
    )


def statuses(bootstrap: str, topics: Topics) -> dict[str, IndexStatus]:
    """The last index status of every object on index-status.v1."""
    found = {}
    for m in read_topic(bootstrap, topics.index_status, idle_s=1.0):
        status = IndexStatus()
        status.ParseFromString(m.value or b"")
        found[m.key or ""] = status
    return found
