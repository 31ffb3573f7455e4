"""Precision is a property of the embedding space: every process of a space encodes with it, two processes give
bit-identical vectors for the same image, and the space id changes with it (fp32 ids stay what they were)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from mmrag.clip import ClipEncoder, clip_model_id
from mmrag.settings import SpaceSettings
from mmrag.space import space_from_settings
from tests.documents import png_bytes, words_image

pytestmark = pytest.mark.unit

EMBED_ONE_IMAGE = """
import json, sys
from mmrag.images import decode_image
from mmrag.settings import SpaceSettings
from mmrag.space import space_clip_encoder, space_from_settings

settings = SpaceSettings()  # MMRAG_CLIP_MODEL_DIR and MMRAG_PRECISION from the environment, as a deployable reads them
encoder = space_clip_encoder(settings, "cpu")
encoder.warm_up()
image = decode_image(open(sys.argv[1], "rb").read(), "b/red.png", "test")
vector = encoder.encode_images([image])[0]
print(json.dumps({"vector": vector.tobytes().hex(), "model_id": encoder.model_id,
                  "space": space_from_settings(settings).id, "precision": encoder.precision}))
"""


def embed_in_processes(clip_dir: Path, image: Path, precisions: list[str | None]) -> list[dict[str, str]]:
    """One fresh Python process per entry (run side by side), each building its encoder from settings."""
    procs = []
    for precision in precisions:
        env = {**os.environ, "MMRAG_CLIP_MODEL_DIR": str(clip_dir), "HF_HUB_OFFLINE": "1"}
        env.pop("MMRAG_PRECISION", None)
        if precision is not None:
            env["MMRAG_PRECISION"] = precision
        command = [sys.executable, "-c", EMBED_ONE_IMAGE, str(image)]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_two_processes_of_a_space_give_bit_identical_vectors(clip_dir: Path, tmp_path: Path) -> None:
    image = tmp_path / "words.png"
    image.write_bytes(png_bytes(words_image("KAFKA", size=(300, 200))))
    first, second, bf16 = embed_in_processes(clip_dir, image, [None, None, "bf16"])
    assert first["precision"] == second["precision"] == "fp32"  # the default, whatever the machine's speeds
    assert first["vector"] == second["vector"]  # bit for bit
    assert first["space"] == second["space"] and first["model_id"] == clip_model_id(clip_dir)
    assert bf16["precision"] == "bf16" and bf16["model_id"] == clip_model_id(clip_dir) + "+bf16"
    assert bf16["space"] != first["space"]
    fp32_vector = np.frombuffer(bytes.fromhex(first["vector"]), dtype=np.float32)
    bf16_vector = np.frombuffer(bytes.fromhex(bf16["vector"]), dtype=np.float32)
    assert fp32_vector.shape == bf16_vector.shape == (64,) and not np.array_equal(fp32_vector, bf16_vector)
    np.testing.assert_allclose(bf16_vector, fp32_vector, atol=0.05)  # the same image, a coarser arithmetic


def test_space_id_follows_the_precision_and_fp32_keeps_the_old_id(clip_dir: Path) -> None:
    ids = {p: space_from_settings(SpaceSettings(clip_model_dir=clip_dir, precision=p)).id for p in ("fp32", "bf16")}
    ids["fp16"] = space_from_settings(SpaceSettings(clip_model_dir=clip_dir, precision="fp16")).id
    assert len(set(ids.values())) == 3
    fp32 = space_from_settings(SpaceSettings(clip_model_dir=clip_dir))
    assert fp32.id == ids["fp32"] and fp32.image_model_id == clip_model_id(clip_dir)
    assert "+" not in fp32.image_model_id  # an fp32 space keeps the id (and the collection) it had before


def test_precision_is_never_auto(clip_dir: Path) -> None:
    with pytest.raises(ValidationError, match="precision"):
        SpaceSettings(clip_model_dir=clip_dir, precision="auto")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="MMRAG_PRECISION"):
        ClipEncoder(clip_dir, precision="auto")
    with pytest.raises(ValueError, match="MMRAG_PRECISION"):
        clip_model_id(clip_dir, "int8")
