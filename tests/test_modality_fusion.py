"""CLIP's verdict decides which list leads: image-first only when the query's best image beats every sentence of the
best text results in CLIP space; each item once; scores stay similarities (joint inner products), keyword-only
items keep their BM25 score; the text side is dense and keyword lists fused by reciprocal rank."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from mmrag.pb.events_pb2 import SearchHit
from query_service.fusion import CLIP, KEYWORD, TEXT, ModalityFusion
from query_service.types import ShardHit

pytestmark = pytest.mark.unit
TEXT_DIM, IMAGE_WEIGHT = 2, 0.6
QUERY_CLIP = np.array([1.0, 0.0])
SENTENCE_VECTORS = {
    "Circles are round.": np.array([0.9, np.sqrt(1 - 0.81)]),
    "Kafka groups.": np.array([0.0, 1.0]),
    "F-2307 fault.": np.array([0.0, 1.0]),
}


def clip_texts(sentences: Sequence[str]) -> np.ndarray:
    return np.stack([SENTENCE_VECTORS[s] for s in sentences])


def hit(oid: str, score: float, text: str = "", image: bool = False) -> ShardHit:
    return ShardHit(
        SearchHit(object_id=oid, vector_id=oid, score=score, text=text, has_text=bool(text), has_image=image), 0
    )


FUSION = ModalityFusion(TEXT_DIM, IMAGE_WEIGHT, clip_texts)
VECTOR = np.concatenate([[0.8, 0.0], IMAGE_WEIGHT * QUERY_CLIP])
TEXTS = [hit("b/geometry.md", 0.3, "Circles are round. Kafka groups."), hit("b/kafka.md", 0.2, "Kafka groups.")]


def ranked(lists: dict[str, list[ShardHit]]) -> list[str]:
    return [h.hit.object_id for h in FUSION.fuse(lists, 10, True, VECTOR)]


def test_images_lead_only_when_clip_puts_the_query_closer_to_an_image_than_to_the_texts() -> None:
    sure = [hit("b/circle.png", IMAGE_WEIGHT**2 * 0.95, image=True)]  # cosine 0.95 > 0.9, the best sentence's
    unsure = [hit("b/circle.png", IMAGE_WEIGHT**2 * 0.85, image=True)]  # 0.85 < 0.9
    assert ranked({TEXT: TEXTS, CLIP: sure}) == ["b/circle.png", "b/geometry.md", "b/kafka.md"]
    assert ranked({TEXT: TEXTS, CLIP: unsure}) == ["b/geometry.md", "b/kafka.md", "b/circle.png"]
    assert ranked({CLIP: unsure}) == ["b/circle.png"]  # an image query: only images
    assert FUSION.queries(np.concatenate([[0.0, 0.0], QUERY_CLIP])).keys() == {CLIP}
    assert FUSION.queries(VECTOR).keys() == {TEXT, CLIP}


def test_the_verdict_stops_at_the_first_sentence_the_best_image_does_not_beat() -> None:
    asked: list[list[str]] = []

    def counted(sentences: Sequence[str]) -> np.ndarray:
        asked.append(list(sentences))
        return clip_texts(sentences)

    fusion = ModalityFusion(TEXT_DIM, IMAGE_WEIGHT, counted)
    unsure = [hit("b/circle.png", IMAGE_WEIGHT**2 * 0.85, image=True)]  # "Circles are round." (0.9) beats it
    assert not fusion.image_first(unsure, TEXTS, VECTOR)
    assert asked == [["Circles are round.", "Kafka groups."]]  # the second result's sentences not encoded
    asked.clear()
    sure = [hit("b/circle.png", IMAGE_WEIGHT**2 * 0.95, image=True)]
    assert fusion.image_first(sure, TEXTS, VECTOR)
    assert asked == [["Circles are round.", "Kafka groups."], ["Kafka groups."]]  # every result's, to be sure
    asked.clear()
    assert not fusion.image_first(sure, [hit("b/blank.md", 0.3, "\n")], VECTOR)  # no sentence: text first
    assert asked == []


def test_each_item_once_with_its_joint_similarity_and_keyword_items_fused_into_the_text_side() -> None:
    ocr = hit("b/diagram.png", 0.25, "Kafka groups.", image=True)  # text and image half: in both lists
    lists = {
        TEXT: [*TEXTS, ocr],
        CLIP: [ShardHit(SearchHit(object_id="b/diagram.png", vector_id="b/diagram.png", score=0.1, has_image=True), 0)],
        KEYWORD: [hit("b/kafka.md", 7.0, "Kafka groups."), hit("b/only-keyword.md", 5.0, "F-2307 fault.")],
    }
    fused = FUSION.fuse(lists, 10, True, VECTOR)
    # text side by reciprocal rank: kafka.md is 2nd dense and 1st by keywords; only-keyword.md 2nd by keywords
    assert [h.hit.object_id for h in fused] == ["b/kafka.md", "b/geometry.md", "b/only-keyword.md", "b/diagram.png"]
    scores = {h.hit.object_id: h.hit.score for h in fused}
    assert scores["b/diagram.png"] == pytest.approx(0.35)  # 0.25 (text half) + 0.1 (image half)
    assert scores["b/kafka.md"] == pytest.approx(0.2) and scores["b/only-keyword.md"] == pytest.approx(5.0)
