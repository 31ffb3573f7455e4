"""Modality fusion on the query side: which lists a query is ranked by, and how they become one answer.

``JointFusion`` ranks by the joint vector alone (one request: the inner product is the weighted sum of the MiniLM
and CLIP cosines, see mmrag.space). ``ModalityFusion`` ranks the same index twice, once by each half of the query
(the other half zeroed: per-modality scores from the joint vectors, no schema change), and fuses the two lists;
see docs/architecture.md "Embedding spaces and fusion" for the measurements behind the choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from mmrag.pb.events_pb2 import SearchHit
    from query_service.search import ShardHit

JOINT, TEXT, CLIP, KEYWORD = "joint", "text", "clip", "keyword"
RRF_K = 60
Ranked = list[
    tuple[str, float]
]  # (item, its score in one list), best first  # Cormack et al.'s constant: dampens the head of each list


class Fusion(Protocol):
    @property
    def name(self) -> str:
        """Names the ranking (in cache keys)."""
        ...

    def queries(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """The query vectors to search with, by list name (at least one)."""
        ...

    def fuse(self, lists: dict[str, list[ShardHit]], top_k: int, per_object: bool) -> list[ShardHit]:
        """One answer from the merged lists (each best first), best first, at most ``top_k``; ``per_object``: the
        lists hold one hit per object, and so does the answer."""
        ...


class JointFusion:
    name = JOINT

    def queries(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        return {JOINT: vector}

    def fuse(self, lists: dict[str, list[ShardHit]], top_k: int, per_object: bool) -> list[ShardHit]:
        """The joint list; the keyword list only when the joint one is missing (the vector index failed)."""
        return (lists.get(JOINT) or lists.get(KEYWORD) or [])[:top_k]


@dataclass(frozen=True)
class ModalityFusion:
    """Per-modality lists fused by ``combine`` (a scoring of ranked lists, e.g. ``rrf``). ``text_dim`` is where the
    MiniLM half of the joint layout ends. A query with one half empty searches that half only."""

    text_dim: int
    combine: Callable[[dict[str, Ranked]], dict[str, float]]
    name: str = "modality"

    def queries(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        vector = np.asarray(vector, dtype=np.float32)
        text, clip = vector.copy(), vector.copy()
        text[self.text_dim :] = 0.0
        clip[: self.text_dim] = 0.0
        found = {name: v for name, v in ((TEXT, text), (CLIP, clip)) if np.any(v)}
        return found or {TEXT: text}

    def fuse(self, lists: dict[str, list[ShardHit]], top_k: int, per_object: bool) -> list[ShardHit]:
        """Each list keeps only rows of its modality (a text-only row scores 0 on the CLIP half); the combined
        score orders the answer. Items are objects (``per_object``) or chunks; an item in several lists is shown as
        its first vector list's hit, and a hit's ``score`` stays a similarity: the sum of its vector lists' scores,
        which is its inner product with the whole query (each list scores one half), as the joint ranking reports
        it; an item only the keyword list found keeps its BM25 score."""
        key = (lambda h: h.hit.object_id) if per_object else (lambda h: h.hit.vector_id)
        own = {name: [h for h in hits if _own(name, h.hit)] for name, hits in lists.items()}
        scores = self.combine({name: [(key(h), h.hit.score) for h in hits] for name, hits in own.items()})
        shown: dict[str, ShardHit] = {}
        similarity: dict[str, float] = {}
        for name, hits in sorted(own.items(), key=lambda item: item[0] == KEYWORD):  # vector lists first
            for h in hits:
                shown.setdefault(key(h), h)
                if name != KEYWORD:
                    similarity[key(h)] = similarity.get(key(h), 0.0) + h.hit.score
                else:
                    similarity.setdefault(key(h), h.hit.score)  # found by keywords alone: its BM25 score
        ranked = sorted(shown, key=lambda k: (-scores[k], k))[:top_k]
        return [_scored(shown[k], similarity[k]) for k in ranked]


def _own(name: str, hit: SearchHit) -> bool:
    """Whether a list ranks ``hit`` by a half it has: the CLIP list images, the others rows with text."""
    return hit.has_image if name == CLIP else hit.has_text


def _scored(h: ShardHit, score: float) -> ShardHit:
    hit = type(h.hit)()
    hit.CopyFrom(h.hit)
    hit.score = score
    return replace(h, hit=hit)


def rrf(lists: dict[str, Ranked], k: int = RRF_K) -> dict[str, float]:
    """Reciprocal rank fusion of ranked item lists: an item's score is the sum over lists of 1 / (k + rank)."""
    scores: dict[str, float] = {}
    for ranked in lists.values():
        for rank, (item, _) in enumerate(ranked, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return scores
