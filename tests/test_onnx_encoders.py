"""The ONNX Runtime encoder backend: each tower's export agrees with torch within the stated tolerance on fixed
inputs, exports are validated and cached by the source model's hash, backend and precision are part of the space
id, and a query for an ONNX space is encoded by ONNX Runtime (torch encoders are refused as a mixed space)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from mmrag.clip import ClipEncoder, clip_model_id
from mmrag.onnx_towers import TOLERANCE, TowerSpec, cached_tower, export_report, onnx_cache_dir, tower_path
from mmrag.settings import SpaceSettings
from mmrag.space import space_clip_encoder, space_from_settings, space_minilm_encoder
from mmrag.text_encoder import MiniLMEncoder
from query_service.query_encoder import QueryEncoder
from tests.documents import words_image

pytestmark = pytest.mark.unit

SENTENCES = [
    "a red circle",
    "the consumer commits its offsets inside the producer's transaction",
    "an invoice scanned as a picture, total 41.20 euros",
    "kafka",
]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A models cache of this module's own: exports happen here, once per tower and precision."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMRAG_CACHE_DIR", str(cache))
        yield cache


def images() -> list:
    return [words_image(word, size=(120, 90)) for word in ("KAFKA", "red", "41.20")]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_minilm_on_onnx_runtime_agrees_with_torch(onnx_cache: Path, precision: str) -> None:
    torch_minilm, onnx_minilm = MiniLMEncoder(), MiniLMEncoder(backend="onnx", precision=precision)
    torch_minilm.warm_up()
    onnx_minilm.warm_up()
    expected, got = torch_minilm.encode(SENTENCES), onnx_minilm.encode(SENTENCES)
    assert got.shape == expected.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.max(np.abs(got - expected)) <= TOLERANCE[precision]
    assert np.min(np.sum(got * expected, axis=1)) > (0.99999 if precision == "fp32" else 0.98)
    assert onnx_minilm.model_id == torch_minilm.model_id + ("+onnx" if precision == "fp32" else "+onnx-int8")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_clip_towers_on_onnx_runtime_agree_with_torch(onnx_cache: Path, clip_dir: Path, precision: str) -> None:
    torch_clip = ClipEncoder(clip_dir, "cpu")
    onnx_clip = ClipEncoder(clip_dir, "cpu", precision, backend="onnx")
    torch_clip.warm_up()
    onnx_clip.warm_up()
    for encode in ("encode_images", "encode_texts"):
        inputs = images() if encode == "encode_images" else SENTENCES
        expected, got = getattr(torch_clip, encode)(inputs), getattr(onnx_clip, encode)(inputs)
        assert got.shape == expected.shape == (len(inputs), 64)
        assert np.max(np.abs(got - expected)) <= TOLERANCE[precision], encode
    assert onnx_clip.model_id == clip_model_id(clip_dir) + ("+onnx" if precision == "fp32" else "+onnx-int8")


def test_exports_are_validated_and_cached_by_the_source_hash(onnx_cache: Path, clip_dir: Path) -> None:
    ClipEncoder(clip_dir, "cpu", "fp32", backend="onnx").warm_up()
    exported = sorted(p.name for p in onnx_cache_dir().glob("clip-*.onnx"))
    digest = clip_model_id(clip_dir).split("@")[1]
    assert f"clip-text-{digest}-fp32-f1.onnx" in exported and f"clip-vision-{digest}-fp32-f1.onnx" in exported
    path = tower_path("clip-vision", digest, "fp32")
    report = export_report(path)
    assert report["tower"] == "clip-vision" and 0 <= report["max_abs_diff"] <= TOLERANCE["fp32"]
    before = path.stat().st_mtime_ns
    ClipEncoder(clip_dir, "cpu", "fp32", backend="onnx").warm_up()  # a second process of the space: no export
    assert path.stat().st_mtime_ns == before


class _ShapeDependent(torch.nn.Module):
    """Python control flow on the batch size: a trace keeps the branch of its own inputs only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1) if x.shape[0] > 2 else x


def test_an_export_that_differs_from_torch_is_refused_and_not_cached(onnx_cache: Path) -> None:
    spec = TowerSpec(
        "shape-dependent",
        _ShapeDependent,
        lambda: {"x": torch.arange(8.0).reshape(2, 4)},
        lambda: {"x": torch.arange(12.0).reshape(3, 4)},
        {"x": {0: "batch"}},
    )
    with pytest.raises(ValueError, match="shape-dependent .*differs from torch"):
        cached_tower(spec, "0123456789ab", "fp32")
    assert not tower_path("shape-dependent", "0123456789ab", "fp32").exists()


def test_backend_and_precision_are_part_of_the_space_id(clip_dir: Path) -> None:
    torch_fp32 = space_from_settings(SpaceSettings(clip_model_dir=clip_dir))
    onnx = {
        p: space_from_settings(SpaceSettings(clip_model_dir=clip_dir, encoder_backend="onnx", precision=p))
        for p in ("fp32", "int8")
    }
    assert len({torch_fp32.id, onnx["fp32"].id, onnx["int8"].id}) == 3
    assert "+" not in torch_fp32.image_model_id and "+" not in torch_fp32.text_model_id  # ids as before
    assert onnx["int8"].text_model_id.endswith("+onnx-int8") and onnx["fp32"].image_model_id.endswith("+onnx")
    assert SpaceSettings(clip_model_dir=clip_dir, encoder_backend="onnx").precision == "int8"  # unless told
    assert SpaceSettings(clip_model_dir=clip_dir, encoder_backend="onnx", precision="fp32").precision == "fp32"
    with pytest.raises(ValidationError, match="does not run on the torch backend"):
        SpaceSettings(clip_model_dir=clip_dir, precision="int8")
    with pytest.raises(ValidationError, match="does not run on the onnx backend"):
        SpaceSettings(clip_model_dir=clip_dir, encoder_backend="onnx", precision="bf16")


def test_a_query_for_an_onnx_space_is_encoded_by_onnx_runtime(onnx_cache: Path, clip_dir: Path) -> None:
    settings = SpaceSettings(clip_model_dir=clip_dir, encoder_backend="onnx", precision="int8")
    space = space_from_settings(settings)
    minilm, clip = space_minilm_encoder(settings), space_clip_encoder(settings, "cpu")
    encoder = QueryEncoder(space, minilm, clip)
    encoder.warm_up()
    query = "a red circle"
    expected = space.fuse(minilm.encode([query])[0], clip.encode_texts([query])[0])
    assert np.array_equal(encoder.encode(query, b""), expected)
    torch_settings = SpaceSettings(clip_model_dir=clip_dir)
    torch_vector = space_from_settings(torch_settings).fuse(*_torch_halves(torch_settings, query))
    assert not np.array_equal(expected, torch_vector)  # int8 vectors are not torch's: the space id tells them apart
    mixed = QueryEncoder(space, space_minilm_encoder(torch_settings), space_clip_encoder(torch_settings, "cpu"))
    with pytest.raises(ValueError, match="a mixed space"):
        mixed.warm_up()
    half_mixed = QueryEncoder(space, minilm, space_clip_encoder(torch_settings, "cpu"))
    with pytest.raises(ValueError, match="the clip encoder gives .*a mixed space"):
        half_mixed.warm_up()


def _torch_halves(settings: SpaceSettings, query: str) -> tuple[np.ndarray, np.ndarray]:
    minilm, clip = space_minilm_encoder(settings), space_clip_encoder(settings, "cpu")
    minilm.warm_up()
    clip.warm_up()
    return minilm.encode([query])[0], clip.encode_texts([query])[0]
