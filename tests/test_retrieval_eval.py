"""The mixed-corpus evaluation (bench/retrieval_eval.py) holds its targets with the query service's fusion: text
questions find their documents in the mixed index as in the text-only one, captions find their images in the mixed
index as in the image-only one, and the joint ranking it replaced is measured beside it.

Needs the trained demo CLIP: the one `mmrag models train-clip` caches (MMRAG_CLIP_MODEL_DIR's default) is used,
trained here once when missing (~2 min on an idle 2-core machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.retrieval_eval import Models, Score, candidate_setups, evaluate, load_corpus
from mmrag.settings import default_clip_model_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_clip() -> Path:
    from local_stack import clip_train

    out = default_clip_model_dir()
    assert clip_train.main(["--out", str(out)]) == 0  # returns at once when it is there already
    return out


@pytest.fixture(scope="module")
def tables(demo_clip: Path) -> dict[str, dict[str, dict[str, Score]]]:
    models = Models.load(demo_clip)
    return evaluate(load_corpus(), models, candidate_setups(models))


def test_the_fusion_keeps_text_recall_and_caption_precision_in_the_mixed_index(tables: dict) -> None:  # type: ignore[type-arg]
    served = tables["modality+bm25"]  # what the query service runs by default
    for kind in ("text", "keyword"):
        assert served[kind]["mixed"].recall == served[kind]["text-only"].recall, kind
        assert served[kind]["mixed"].intruders == 0, kind
    for kind in ("caption", "image"):
        assert served[kind]["mixed"].precision == served[kind]["image-only"].precision, kind
    assert served["text"]["text-only"].recall >= 0.9
    assert served["caption"]["image-only"].precision >= 0.9  # the trained CLIP finds shapes by caption


def test_the_joint_ranking_it_replaced_lets_images_into_text_answers(tables: dict) -> None:  # type: ignore[type-arg]
    joint = tables["joint"]["text"]
    assert joint["mixed"].intruders > 0
    assert joint["mixed"].recall < tables["modality+bm25"]["text"]["mixed"].recall
