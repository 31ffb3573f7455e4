"""Embedding spaces and the joint vector layout shared by the index updater and the query service.

Joint vector = concat(w_t * normalize(text_vec), w_i * normalize(clip_vec)); a missing half is zeros, so an inner
product is the weighted sum of per-modality cosines. ``text_vec`` is MiniLM; ``clip_vec`` is CLIP (image tower for
images, text tower for text), so a text query reaches images through CLIP.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from mmrag.clip import ClipEncoder, clip_dim, clip_model_id
from mmrag.settings import SpaceSettings
from mmrag.text_encoder import MiniLMEncoder, minilm_model_id


@dataclass(frozen=True)
class EmbeddingSpace:
    text_model_id: str
    text_dim: int
    image_model_id: str
    image_dim: int
    text_weight: float
    image_weight: float
    clip_text_for_text: bool = False

    @cached_property
    def id(self) -> str:
        """Short hash of models, revisions, weights and dims: vectors of two spaces never mix (worked out once)."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    @property
    def dim(self) -> int:
        return self.text_dim + self.image_dim

    def fuse(self, text_vec: np.ndarray | None, clip_vec: np.ndarray | None) -> np.ndarray:
        """The joint vector of one record or query; raises ValueError on a wrong-sized half."""
        return np.concatenate(
            [
                _weighted_half(text_vec, self.text_dim, self.text_weight, "text"),
                _weighted_half(clip_vec, self.image_dim, self.image_weight, "clip"),
            ]
        )

    def text_half(self, joint: np.ndarray) -> np.ndarray | None:
        """The unit MiniLM half of a stored joint vector, or None when that half is empty."""
        return _unit(joint[: self.text_dim])

    def clip_half(self, joint: np.ndarray) -> np.ndarray | None:
        """The unit CLIP half of a stored joint vector, or None when that half is empty."""
        return _unit(joint[self.text_dim :])


def _unit(half: np.ndarray) -> np.ndarray | None:
    half = np.asarray(half, dtype=np.float32)
    norm = float(np.linalg.norm(half))
    return None if norm == 0.0 else half / norm


def _weighted_half(vec: np.ndarray | None, dim: int, weight: float, name: str) -> np.ndarray:
    if vec is None:
        return np.zeros(dim, dtype=np.float32)
    vec = np.asarray(vec, dtype=np.float32).reshape(-1)
    if vec.shape[0] != dim:
        raise ValueError(f"{name} vector has {vec.shape[0]} dims, the embedding space expects {dim}")
    norm = float(np.linalg.norm(vec))
    return (weight * vec / norm).astype(np.float32) if norm > 0 else np.zeros(dim, dtype=np.float32)


def space_from_settings(settings: SpaceSettings) -> EmbeddingSpace:
    """The space the configured models define; cheap (reads model metadata, loads no weights). The model ids name
    the backend and precision (unless torch fp32), so the space id changes with MMRAG_ENCODER_BACKEND and
    MMRAG_PRECISION."""
    backend, precision = settings.encoder_backend, settings.precision
    return EmbeddingSpace(
        text_model_id=minilm_model_id(backend, precision),
        text_dim=MiniLMEncoder.dim,
        image_model_id=clip_model_id(settings.clip_model_dir, precision, backend),
        image_dim=clip_dim(settings.clip_model_dir),
        text_weight=settings.text_weight,
        image_weight=settings.image_weight,
        clip_text_for_text=settings.clip_text_for_text,
    )


def space_clip_encoder(settings: SpaceSettings, device: str | None = None) -> ClipEncoder:
    """The CLIP encoder of the space (its model directory, backend and precision): what every process of a space
    (vision and text embedders, the query service) builds, so they all encode alike; not loaded until
    ``warm_up()``."""
    s = settings
    return ClipEncoder(s.clip_model_dir, device, s.precision, s.torch_threads, s.encoder_backend)


def space_minilm_encoder(settings: SpaceSettings) -> MiniLMEncoder:
    """The MiniLM encoder of the space (its backend; its precision on ONNX Runtime), as the text embedder and the
    query service build it; not loaded until ``warm_up()``."""
    return MiniLMEncoder(threads=settings.torch_threads, backend=settings.encoder_backend, precision=settings.precision)
