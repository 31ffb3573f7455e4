"""The identity of a model directory's files: a hash of its config and weights, read without loading them."""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHTS_FILE = "model.safetensors"
_HASH_BLOCK = 1 << 20


def weights_digest(model_dir: Path) -> str:
    """sha256(config.json + model.safetensors)[:12], the weights streamed (real CLIP weights are ~600 MB).

    Raises ValueError when either file is missing.
    """
    config = Path(model_dir) / "config.json"
    weights = Path(model_dir) / WEIGHTS_FILE
    if not config.is_file():
        raise ValueError(f"{model_dir} holds no model (no config.json)")
    if not weights.is_file():
        raise ValueError(f"{model_dir} has config.json but no {WEIGHTS_FILE}: save the model with save_pretrained")
    digest = hashlib.sha256(config.read_bytes())
    with weights.open("rb") as stream:
        for block in iter(lambda: stream.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()[:12]
