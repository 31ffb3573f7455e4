"""The CLIP port on a small random-init model: loading, encoding contract, identity, tokenizer, determinism."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import transformers
from PIL import Image

from local_stack.clip_train import COLOURS, SHAPES, captions_from_easy_vqa, main, recall_at_k, register_cli, train_clip
from mmrag.clip import (
    ClipEncoder,
    build_clip_tokenizer,
    clip_dim,
    clip_model_id,
    cpu_precision_for,
    write_random_clip,
)

pytestmark = pytest.mark.unit
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CAPTIONS = ["a red circle", "a blue triangle", "a green rectangle", "a photo of a dog"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_clip(tmp_path_factory.mktemp("first") / "tiny-clip", seed=0)


@pytest.fixture(scope="module")
def encoder(model_dir: Path) -> ClipEncoder:
    warm = ClipEncoder(model_dir, device="cpu")
    warm.warm_up()
    return warm


def _images() -> list[Image.Image]:
    return [
        Image.new("RGB", (64, 64), "red"),
        Image.new("RGBA", (100, 80), (0, 0, 255, 128)),
        Image.new("L", (30, 90), 200),
    ]


def test_random_model_loads_through_the_encoder(model_dir: Path, encoder: ClipEncoder) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (model_dir / name).is_file(), name
    assert encoder.is_warm and encoder.device == "cpu"
    assert encoder.dim == clip_dim(model_dir) == 64
    assert re.fullmatch(r"clip:tiny-clip@[0-9a-f]{12}", encoder.model_id)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["projection_dim"] == config["text_config"]["projection_dim"] == 64
    assert config["vision_config"]["projection_dim"] == 64 and config["vision_config"]["image_size"] == 64


def test_encode_images_gives_unit_float32_rows(encoder: ClipEncoder) -> None:
    vectors = encoder.encode_images(_images())
    assert vectors.shape == (3, 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)
    np.testing.assert_allclose(encoder.encode_images(_images()[:1])[0], vectors[0], atol=1e-5)


def test_encode_texts_gives_unit_rows_and_truncates_long_text(encoder: ClipEncoder) -> None:
    vectors = encoder.encode_texts([*CAPTIONS, "word " * 500])
    assert vectors.shape == (5, 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_empty_input_gives_zero_rows(encoder: ClipEncoder) -> None:
    assert encoder.encode_images([]).shape == (0, 64)
    assert encoder.encode_texts([]).shape == (0, 64)
    assert encoder.encode_texts([]).dtype == np.float32


def test_different_captions_pool_to_different_vectors(encoder: ClipEncoder) -> None:
    # with a wrong eos id every caption pools the same position and these would all be equal
    vectors = encoder.encode_texts(CAPTIONS)
    for i in range(len(CAPTIONS)):
        for j in range(i + 1, len(CAPTIONS)):
            assert not np.allclose(vectors[i], vectors[j], atol=1e-3), (CAPTIONS[i], CAPTIONS[j])


def test_encoding_before_warm_up_raises(model_dir: Path) -> None:
    cold = ClipEncoder(model_dir)
    assert not cold.is_warm
    with pytest.raises(RuntimeError, match="warm_up"):
        cold.encode_texts(["a red circle"])
    with pytest.raises(RuntimeError, match="warm_up"):
        cold.encode_images(_images())


def test_bad_settings_and_missing_model_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision"):
        ClipEncoder(tmp_path, precision="int4")
    with pytest.raises(ValueError, match=r"mmrag models init-clip") as missing:
        clip_model_id(tmp_path)
    assert str(tmp_path) in str(missing.value)
    with pytest.raises(ValueError, match="init-clip"):
        ClipEncoder(tmp_path).warm_up()


def test_tokenizer_matches_the_model_config(model_dir: Path, encoder: ClipEncoder) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    text_config = json.loads((model_dir / "config.json").read_text())["text_config"]
    assert tokenizer.eos_token_id == text_config["eos_token_id"] != 2
    assert tokenizer.bos_token_id == text_config["bos_token_id"]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (len(tokenizer) - 2, len(tokenizer) - 1)
    assert tokenizer.convert_ids_to_tokens([len(tokenizer) - 2, len(tokenizer) - 1]) == [
        "<|startoftext|>",
        "<|endoftext|>",
    ]
    batch = tokenizer(["a red circle", "a"], padding=True)
    assert batch["input_ids"][0][0] == tokenizer.bos_token_id and batch["input_ids"][0][-1] == tokenizer.eos_token_id
    assert batch["input_ids"][1][-1] == tokenizer.pad_token_id == tokenizer.eos_token_id
    assert tokenizer.convert_ids_to_tokens(tokenizer("A Red Circle")["input_ids"][1:-1]) == [
        "a</w>",
        "red</w>",
        "circle</w>",
    ]
    assert text_config["vocab_size"] == len(tokenizer)


def test_tokenizer_is_deterministic_and_covers_any_text() -> None:
    corpus = ["a red circle", "a blue circle", "an old red barn"] * 3
    first, second = build_clip_tokenizer(corpus), build_clip_tokenizer(iter(corpus))
    assert isinstance(first, transformers.CLIPTokenizerFast)
    assert first.get_vocab() == second.get_vocab()
    ids = first("zebra Ünïcode 42 ✓")["input_ids"]
    assert first.unk_token_id not in ids[1:-1]  # every byte has a token, so nothing falls back to unk
    with pytest.raises(ValueError, match="vocab_size"):
        build_clip_tokenizer(corpus, vocab_size=100)


def test_same_seed_gives_the_same_model_and_vectors(tmp_path: Path, model_dir: Path, encoder: ClipEncoder) -> None:
    again = write_random_clip(tmp_path / "again" / "tiny-clip", seed=0)
    other = write_random_clip(tmp_path / "other" / "tiny-clip", seed=1)
    assert clip_model_id(again) == encoder.model_id != clip_model_id(other)
    # fp32 is the default precision of every space (bf16 vectors differ in the third decimal); pinned here anyway
    first, second = (ClipEncoder(d, device="cpu", precision="fp32") for d in (model_dir, again))
    first.warm_up()
    second.warm_up()
    np.testing.assert_array_equal(second.encode_texts(CAPTIONS), first.encode_texts(CAPTIONS))
    np.testing.assert_array_equal(second.encode_images(_images()), first.encode_images(_images()))


def test_model_id_is_cheap_and_follows_the_weights(tmp_path: Path, model_dir: Path) -> None:
    probe = (
        "import sys; from mmrag.clip import clip_model_id; print(clip_model_id(sys.argv[1]), 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(model_dir)], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [clip_model_id(model_dir), "False"]

    changed = shutil.copytree(model_dir, tmp_path / "tiny-clip")
    assert clip_model_id(changed) == clip_model_id(model_dir)
    model = transformers.CLIPModel.from_pretrained(changed)
    model.text_projection.weight.data[0, 0] += 0.01
    model.save_pretrained(changed)
    assert clip_model_id(changed) != clip_model_id(model_dir)


def test_easy_vqa_captions_name_one_colour_and_one_shape() -> None:
    pairs = captions_from_easy_vqa("test")
    captions = {caption for _, caption in pairs}
    assert captions == {f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES}
    assert 0.8 * 1000 < len(pairs) < 1000
    assert (pairs[0][0].name, pairs[0][1]) == ("0.png", "a red triangle")  # "what is the red shape?" -> triangle
    assert all(path.is_file() for path, _ in pairs[:10])
    with pytest.raises(ValueError, match="split"):
        captions_from_easy_vqa("validation")


def test_init_clip_command_writes_a_loadable_model(tmp_path: Path, encoder: ClipEncoder) -> None:
    parser = argparse.ArgumentParser()
    register_cli(parser)
    args = parser.parse_args(["init-clip", "--out", str(tmp_path / "tiny-clip"), "--seed", "0"])
    assert args.func(args) == 0
    assert clip_model_id(tmp_path / "tiny-clip") == encoder.model_id
    train = parser.parse_args(["train-clip", "--out", str(tmp_path), "--epochs", "3", "--force"])
    assert (train.epochs, train.force, train.seed, train.threads) == (3, True, 0, 2)


@pytest.mark.slow
def test_training_beats_random_init_and_is_cached(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "demo-clip"
    report = train_clip(out_dir, epochs=1, progress=False)
    assert report["trained"]["recall@5"] > report["random_init"]["recall@5"]
    assert json.loads((out_dir / "train_report.json").read_text()) == report
    assert recall_at_k(out_dir, k=5) == report["trained"]["recall@5"]
    assert report["model_id"] == clip_model_id(out_dir)

    assert main(["--out", str(out_dir), "--epochs", "1"]) == 0  # cached: returns at once with the same report
    assert json.loads(capsys.readouterr().out) == report


def test_precision_hint_takes_bf16_only_when_clearly_faster(encoder: ClipEncoder) -> None:
    assert cpu_precision_for(1.0, 1.0) == cpu_precision_for(1.0, 0.85) == cpu_precision_for(1.0, 1.6) == "fp32"
    assert cpu_precision_for(1.0, 0.8) == cpu_precision_for(2.0, 1.0) == "bf16"
    assert encoder.precision == "fp32"  # the default on any device: a hint is printed by the bench, never applied
