"""The three encoder towers as torch modules that return a batch's (unnormalized) vectors, and how to export each.

The torch backend runs these modules; the ONNX backend runs their export (mmrag.onnx_towers), so both compute the
same function from the same tokenizer and processor output. Imports torch: import this module lazily.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmrag.model_files import weights_digest
from mmrag.onnx_towers import OnnxTower, TowerSpec, cached_tower

# fixed text for tracing and validation: several lengths, so the export is checked with padding
_CHECK_TEXTS = (
    "a red circle",
    "kafka partitions keep the order of the records of one key",
    "an invoice scanned as a picture, with a total of 41.20 euros at the bottom of the page",
)


class MeanPooled(torch.nn.Module):
    """A BERT-style encoder's hidden states averaged over the real (unmasked) tokens: sentence-transformers' pooling
    for all-MiniLM-L6-v2."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class ClipImageTower(torch.nn.Module):
    """CLIP's projected image embedding of preprocessed pixels."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output


class ClipTextTower(torch.nn.Module):
    """CLIP's projected text embedding of token ids (pooled at the end-of-text token)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


def _tokens(tokenizer: Any, texts: Sequence[str], names: Sequence[str]) -> dict[str, torch.Tensor]:
    batch = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
    return {name: batch[name] for name in names}


def minilm_spec(model_dir: Path) -> TowerSpec:
    """MiniLM (mean-pooled) exported from ``model_dir``."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    names = ("input_ids", "attention_mask", "token_type_ids")
    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    return TowerSpec(
        "minilm",
        lambda: MeanPooled(AutoModel.from_pretrained(model_dir, attn_implementation="eager")),
        lambda: _tokens(tokenizer, _CHECK_TEXTS[1:], names),
        lambda: _tokens(tokenizer, _CHECK_TEXTS, names),
        axes,
    )


def clip_specs(model_dir: Path) -> tuple[TowerSpec, TowerSpec]:
    """(vision, text) towers of the CLIP in ``model_dir``; the torch model is loaded once for both."""
    from transformers import AutoProcessor, CLIPModel

    loaded: list[Any] = []

    def model() -> Any:
        if not loaded:
            loaded.append(CLIPModel.from_pretrained(model_dir, attn_implementation="eager").eval())
        return loaded[0]

    processor = AutoProcessor.from_pretrained(model_dir)
    side = int(processor.image_processor.crop_size["height"])

    def pixels(n: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(n)
        return {"pixel_values": torch.randn(n, 3, side, side, generator=generator)}

    names = ("input_ids", "attention_mask")
    vision = TowerSpec(
        "clip-vision",
        lambda: ClipImageTower(model()),
        lambda: pixels(2),
        lambda: pixels(3),
        {"pixel_values": {0: "batch"}},
    )
    text = TowerSpec(
        "clip-text",
        lambda: ClipTextTower(model()),
        lambda: _tokens(processor.tokenizer, _CHECK_TEXTS[1:], names),
        lambda: _tokens(processor.tokenizer, _CHECK_TEXTS, names),
        {name: {0: "batch", 1: "tokens"} for name in names},
    )
    return vision, text


class TorchTower:
    """A tower module run by torch on ``device``; floating inputs are cast to ``dtype`` (the space's precision)."""

    def __init__(self, module: torch.nn.Module, device: str, dtype: torch.dtype | None = None) -> None:
        self.module = module.eval()
        self.device = device
        self.dtype = dtype

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        tensors = {name: torch.from_numpy(value).to(self.device) for name, value in inputs.items()}
        if self.dtype is not None:
            tensors = {n: t.to(self.dtype) if t.is_floating_point() else t for n, t in tensors.items()}
        with torch.inference_mode():
            return self.module(**tensors).float().cpu().numpy()


def onnx_clip_towers(model_dir: Path, precision: str, threads: int) -> tuple[OnnxTower, OnnxTower]:
    """(image, text) towers of the CLIP in ``model_dir`` on ONNX Runtime, exported on first use."""
    digest = weights_digest(model_dir)
    vision, text = clip_specs(model_dir)
    return (
        OnnxTower(cached_tower(vision, digest, precision), threads),
        OnnxTower(cached_tower(text, digest, precision), threads),
    )
