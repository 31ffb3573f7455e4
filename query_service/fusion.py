"""Modality fusion on the query side: which lists a query is ranked by, and how they become one answer.

``ModalityFusion`` (the default) ranks the index by each half of the query separately (the other half zeroed: the
joint vectors give per-modality scores, no schema change): a text list (MiniLM, fused by RRF with the shards'
keyword list when there is one) and an image list (CLIP). Which list leads is CLIP's own verdict, with no tuned
constant: the query goes image-first when CLIP puts it closer to its best image than to any sentence of the best
text results (CLIP's text-text similarities run far above its text-image ones, so ordinary text is always closer to
other text; a description of a picture is closer to the picture). The other list follows. ``JointFusion`` ranks by
the joint vector alone (the weighted sum of both cosines), as before; see docs/architecture.md "Embedding spaces
and fusion" for the measurements behind the choice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np

from mmrag.pb.events_pb2 import Modality

if TYPE_CHECKING:
    from mmrag.pb.events_pb2 import SearchHit
    from query_service.types import ShardHit

JOINT, TEXT, CLIP, KEYWORD = "joint", "text", "clip", "keyword"
RRF_K = 60  # Cormack et al.'s constant: dampens the head of each list
REFERENCE_ITEMS = 3  # the best text results whose sentences CLIP compares the query with
REFERENCE_SENTENCES = 12  # per result: CLIP reads 77 tokens, whole chunks score low against anything
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+|\n+")


class Fusion(Protocol):
    @property
    def name(self) -> str:
        """Names the ranking (in cache keys)."""
        ...

    def queries(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """The query vectors to search with, by list name (at least one)."""
        ...

    def fuse(
        self, lists: dict[str, list[ShardHit]], top_k: int, per_object: bool, vector: np.ndarray
    ) -> list[ShardHit]:
        """One answer from the merged lists (each best first) of the query ``vector``, best first, at most
        ``top_k``; ``per_object``: the lists hold one hit per object, and so does the answer."""
        ...


class JointFusion:
    name = JOINT

    def queries(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        return {JOINT: vector}

    def fuse(
        self, lists: dict[str, list[ShardHit]], top_k: int, per_object: bool, vector: np.ndarray
    ) -> list[ShardHit]:
        """The joint list; the keyword list only when the joint one is missing (the vector index failed)."""
        return (lists.get(JOINT) or lists.get(KEYWORD) or [])[:top_k]


@dataclass(frozen=True)
class ModalityFusion:
    """``text_dim``: where the MiniLM half of the joint layout ends; ``image_weight``: the CLIP half's weight (an
    image list score is weight² x cosine); ``clip_texts``: unit CLIP text vectors of sentences (the caller caches)."""

    text_dim: int
    image_weight: float
    clip_texts: Callable[[Sequence[str]], np.ndarray]
    name: str = "modality"

    def queries(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        vector = np.asarray(vector, dtype=np.float32)
        text, clip = vector.copy(), vector.copy()
        text[self.text_dim :] = 0.0
        clip[: self.text_dim] = 0.0
        found = {name: v for name, v in ((TEXT, text), (CLIP, clip)) if np.any(v)}
        return found or {TEXT: text}

    def fuse(
        self, lists: dict[str, list[ShardHit]], top_k: int, per_object: bool, vector: np.ndarray
    ) -> list[ShardHit]:
        """The leading list, then the other one, each item once (an image with OCR text is in both lists: it stays
        where it comes first). A hit's ``score`` stays a similarity: the sum of its vector lists' scores, which is
        its inner product with the whole query (each list scores one half), as the joint ranking reports it; an item
        only the keyword list found keeps its BM25 score."""
        key: Callable[[ShardHit], str] = (lambda h: h.hit.object_id) if per_object else (lambda h: h.hit.vector_id)
        own = {name: [h for h in hits if own_half(name, h.hit)] for name, hits in lists.items()}
        text_side = own.get(TEXT, [])
        if KEYWORD in own:
            text_side = reciprocal_rank_fusion([text_side, own[KEYWORD]], key)
        images = own.get(CLIP, [])
        ordered = [*images, *text_side] if self.image_first(images, text_side, vector) else [*text_side, *images]
        similarity: dict[str, float] = {}
        for name, hits in own.items():
            for h in hits:
                if name != KEYWORD:
                    similarity[key(h)] = similarity.get(key(h), 0.0) + h.hit.score
        shown: dict[str, ShardHit] = {}
        for h in ordered:
            shown.setdefault(key(h), h)
        return [_scored(h, similarity.get(k, h.hit.score)) for k, h in list(shown.items())[:top_k]]

    def image_first(self, images: list[ShardHit], text_side: list[ShardHit], vector: np.ndarray) -> bool:
        """CLIP's verdict: the query's best image beats every sentence of the best text results (both cosines).
        Results are read best first and the verdict stops at the first sentence the image does not beat: an
        ordinary text query is decided by its best result's sentences, not CLIP over all of them (CLIP's text tower
        is most of a Search's CPU when the sentences are not cached)."""
        if not images or not text_side:
            return bool(images)
        query = _unit(np.asarray(vector, dtype=np.float32)[self.text_dim :])
        if query is None:
            return False
        best_image = max(h.hit.score for h in images) / self.image_weight**2
        compared = False
        for h in text_side[:REFERENCE_ITEMS]:
            sentences = _sentences(h.hit.text)
            if sentences:
                compared = True
                if float(np.max(self.clip_texts(sentences) @ query)) >= best_image:
                    return False
        return compared


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()][:REFERENCE_SENTENCES]


def _unit(v: np.ndarray) -> np.ndarray | None:
    norm = float(np.linalg.norm(v))
    return None if norm == 0.0 else v / norm


def list_half(name: str) -> Modality:
    """The rows a list ranks, as the shards filter them (``SearchList.half``): the CLIP list images, the text list
    rows with text, any other every row."""
    return {CLIP: Modality.MODALITY_IMAGE, TEXT: Modality.MODALITY_TEXT}.get(name, Modality.MODALITY_UNSPECIFIED)


def own_half(name: str, hit: SearchHit) -> bool:
    """Whether a list ranks ``hit`` by a half it has: the CLIP list images, the others rows with text."""
    return hit.has_image if name == CLIP else hit.has_text


def reciprocal_rank_fusion(lists: list[list[ShardHit]], key: Callable[[ShardHit], str]) -> list[ShardHit]:
    """Reciprocal rank fusion: an item's score is the sum over lists of 1 / (RRF_K + rank); shown as its first hit."""
    scores: dict[str, float] = {}
    first: dict[str, ShardHit] = {}
    for hits in lists:
        for rank, h in enumerate(hits, start=1):
            scores[key(h)] = scores.get(key(h), 0.0) + 1.0 / (RRF_K + rank)
            first.setdefault(key(h), h)
    return [first[k] for k in sorted(scores, key=lambda k: (-scores[k], k))]


def _scored(h: ShardHit, score: float) -> ShardHit:
    hit = type(h.hit)()
    hit.CopyFrom(h.hit)
    hit.score = score
    return replace(h, hit=hit)
