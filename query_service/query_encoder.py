"""Builds the query side of the joint vector from text, an image, or both (same layout as the index)."""

from __future__ import annotations

import numpy as np

from mmrag.clip import ClipEncoder
from mmrag.images import decode_image
from mmrag.space import EmbeddingSpace
from mmrag.text_encoder import MiniLMEncoder

STAGE = "query_service"


class QueryEncoder:
    def __init__(self, space: EmbeddingSpace, text: MiniLMEncoder, clip: ClipEncoder) -> None:
        self.space = space
        self.text = text
        self.clip = clip

    def warm_up(self) -> None:
        self.text.warm_up()
        self.clip.warm_up()

    def encode(self, text: str, image: bytes) -> np.ndarray:
        """Text -> MiniLM half + CLIP-text half; image -> CLIP-image half; both -> the CLIP halves averaged.

        Raises ValueError when both are empty, PermanentError when the image cannot be decoded.
        """
        if not text and not image:
            raise ValueError("a query needs text, an image, or both")
        minilm = self.text.encode([text])[0] if text else None
        clip_parts = []
        if text:
            clip_parts.append(self.clip.encode_texts([text])[0])
        if image:
            clip_parts.append(self.clip.encode_images([decode_image(image, "query image", STAGE)])[0])
        clip = np.sum(clip_parts, axis=0)
        return self.space.fuse(minilm, clip)
