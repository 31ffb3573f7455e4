"""Builds the query side of the joint vector from text, an image, or both (same layout as the index)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmrag.clip import ClipEncoder
from mmrag.images import decode_image
from mmrag.space import EmbeddingSpace
from mmrag.text_encoder import MiniLMEncoder
from query_service.caches import EmbeddingCache

STAGE = "query_service"


class QueryEncoder:
    """``cache`` (optional) keeps the vectors of query texts and images by content hash (query_service.caches)."""

    def __init__(
        self, space: EmbeddingSpace, text: MiniLMEncoder, clip: ClipEncoder, cache: EmbeddingCache | None = None
    ) -> None:
        self.space = space
        self.text = text
        self.clip = clip
        self.cache = cache

    def warm_up(self) -> None:
        """Loads the models not loaded yet (the MiniLM encoder may be shared by the encoders of several spaces).

        Raises ValueError when an encoder is not the space's (another backend or precision: a mixed space)."""
        self._check_models()
        if not self.text.is_warm:
            self.text.warm_up()
        self.clip.warm_up()

    def _check_models(self) -> None:
        """Vectors of two spaces never mix: a query for an ONNX Runtime space must not be encoded by torch."""
        for half, model, expected in (
            ("text", self.text.model_id, self.space.text_model_id),
            ("clip", self.clip.model_id, self.space.image_model_id),
        ):
            if model != expected:
                raise ValueError(
                    f"{STAGE}: the {half} encoder gives {model!r} vectors, space {self.space.id} holds "
                    f"{expected!r} ones (a mixed space) -> build the query encoder from the space's settings "
                    "(MMRAG_ENCODER_BACKEND, MMRAG_PRECISION)"
                )

    def encode(self, text: str, image: bytes) -> np.ndarray:
        """Text -> MiniLM half + CLIP-text half; image -> CLIP-image half; both -> the CLIP halves summed.

        Raises ValueError when both are empty, PermanentError when the image cannot be decoded.
        """
        if not text.strip() and not image:
            raise ValueError("a query needs text, an image, or both (the text is empty or only white space)")
        text = text if text.strip() else ""  # white space beside an image: an image query
        minilm = None
        clip_parts = []
        if text:
            minilm, clip_text = self._cached_text(text)
            clip_parts.append(clip_text)
        if image:
            clip_parts.append(self._cached_image(image))
        return self.space.fuse(minilm, np.sum(clip_parts, axis=0))

    def clip_sentences(self, sentences: Sequence[str]) -> np.ndarray:
        """Unit CLIP text vectors of ``sentences`` (n, dim); with a cache each sentence is encoded once."""

        def encode(texts: list[str]) -> np.ndarray:
            vectors = np.asarray(self.clip.encode_texts(texts), dtype=np.float32)
            return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

        return encode(list(sentences)) if self.cache is None else self.cache.sentences(sentences, encode)

    def minilm_sentences(self, sentences: Sequence[str]) -> np.ndarray:
        """Unit MiniLM vectors of ``sentences`` (n, 384): what Ask's support check compares; each encoded once
        with a cache."""

        def encode(texts: list[str]) -> np.ndarray:
            return np.asarray(self.text.encode(texts), dtype=np.float32)

        if self.cache is None:
            return encode(list(sentences))
        return self.cache.sentences(sentences, encode, model=b"minilm")

    def _cached_text(self, text: str) -> tuple[np.ndarray, ...]:
        def encode() -> tuple[np.ndarray, ...]:
            return self.text.encode([text])[0], self.clip.encode_texts([text])[0]

        return encode() if self.cache is None else self.cache.text(text, encode)

    def _cached_image(self, image: bytes) -> np.ndarray:
        def encode() -> tuple[np.ndarray, ...]:
            decoded = decode_image(image, "query image", STAGE, fix="send a PNG, JPEG, WebP, GIF or SVG image")
            return (self.clip.encode_images([decoded])[0],)

        return (encode() if self.cache is None else self.cache.image(image, encode))[0]
