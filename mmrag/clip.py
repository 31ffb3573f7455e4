"""The CLIP port: model identity, a warm-up-then-encode wrapper, and a small random CLIP for tests.

Real openai/clip-vit-base-patch32 files and the models written here load by the same code
(`CLIPModel.from_pretrained` + `AutoProcessor.from_pretrained`). torch and transformers are imported
lazily so that wiring, config checks and `clip_model_id` stay cheap.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrag.encoder_backend import check_backend, model_id_suffix
from mmrag.model_files import weights_digest
from mmrag.onnx_towers import Tower, unit_rows

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image
    from transformers import CLIPConfig, CLIPProcessor, CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
_ENCODE_BATCH = 64  # bounds activation memory for long inputs; real CLIP at 224 px uses ~1 GB at this size
_SMALL_IMAGE_SIZE = 64
_SMALL_PROJECTION_DIM = 64
_DEFAULT_CORPUS = (
    "a photo of a cat",
    "a photo of a dog",
    "a red circle",
    "a blue triangle",
    "a green rectangle",
    "a diagram of a kafka pipeline",
    "an invoice scanned as a picture",
    "two people standing next to a car",
)


log = logging.getLogger(__name__)


def _config_path(model_dir: Path) -> Path:
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        raise ValueError(
            f"{model_dir} holds no CLIP model (no config.json): create one with "
            f"`mmrag models init-clip --out {model_dir}` (random init, for tests) or "
            f"`mmrag models train-clip --out {model_dir}` (the easy-vqa demo), "
            "or mount openai/clip-vit-base-patch32 files there"
        )
    return config


def clip_model_id(model_dir: Path, precision: str = "fp32", backend: str = "torch") -> str:
    """``clip:<dir name>@<sha256(config.json + model.safetensors)[:12]>``, plus ``+<precision>`` on torch unless
    fp32 (so fp32 ids stay what they always were) and ``+onnx``/``+onnx-int8`` on ONNX Runtime; no torch import, no
    weight load. Vectors in bf16, fp16 or int8, or from another runtime, differ from torch fp32 ones in the third
    decimal, so backend and precision are part of the model's, and so the space's, identity.

    Raises ValueError when config.json or the safetensors weights are missing, or for a precision the backend does
    not run.
    """
    suffix = model_id_suffix(backend, precision)
    _config_path(model_dir)
    return f"clip:{Path(model_dir).name}@{weights_digest(model_dir)}{suffix}"


def clip_dim(model_dir: Path) -> int:
    """The joint embedding size (``projection_dim`` in config.json); raises ValueError without a model there."""
    return int(json.loads(_config_path(model_dir).read_text())["projection_dim"])


def _resolve_dtype(precision: str) -> torch.dtype:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


BF16_MIN_SPEEDUP = 1.25


def cpu_precision_for(fp32_seconds: float, bf16_seconds: float) -> str:
    """ "bf16" when it ran at least BF16_MIN_SPEEDUP times faster than fp32 on the same probe, else "fp32": a hint
    for choosing a new space's MMRAG_PRECISION (bench/embedders.py prints it), never applied at start-up."""
    return "bf16" if fp32_seconds >= BF16_MIN_SPEEDUP * bf16_seconds else "fp32"


class ClipEncoder:
    """Images and texts to L2-normalized float32 vectors in CLIP's joint space.

    The constructor only stores settings; `warm_up()` loads the model. Encoding before warm-up raises RuntimeError.
    """

    def __init__(
        self,
        model_dir: Path,
        device: str | None = None,
        precision: str = "fp32",
        threads: int = 0,
        backend: str = "torch",
    ) -> None:
        check_backend(backend, precision)
        if threads < 0:
            raise ValueError(f"CLIP threads must be >= 0 (0 keeps torch's default), got {threads}")
        self._model_dir = Path(model_dir)
        self._requested_device = device
        self._precision = precision
        self._threads = threads
        self._backend = backend
        self._model_id: str | None = None
        self._dim: int | None = None
        self._device = device or "auto"
        self._towers: tuple[Tower, Tower] | None = None  # (image, text)
        self._processor: CLIPProcessor | None = None

    @property
    def model_id(self) -> str:
        """The id of the weights in the directory (of the loaded ones once warm) and of the precision."""
        if self._model_id is None:
            self._model_id = clip_model_id(self._model_dir, self._precision, self._backend)
        return self._model_id

    @property
    def dim(self) -> int:
        """Length of every vector this encoder returns."""
        if self._dim is None:
            self._dim = clip_dim(self._model_dir)
        return self._dim

    @property
    def device(self) -> str:
        """The device in use once warm; before that the requested one, or ``"auto"``."""
        return self._device

    @property
    def precision(self) -> str:
        """fp32, bf16 or fp16 on torch, fp32 or int8 on ONNX Runtime: the space's, on every device."""
        return self._precision

    @property
    def backend(self) -> str:
        """torch or onnx: the space's."""
        return self._backend

    @property
    def input_size(self) -> int:
        """The side of the square the image tower reads (224 for ViT-B/32); 0 before warm-up."""
        if self._processor is None:
            return 0
        return int(self._processor.image_processor.crop_size["height"])

    @property
    def is_warm(self) -> bool:
        """True once `warm_up()` has loaded model and processor."""
        return self._towers is not None

    def warm_up(self) -> None:
        """Load model and processor, place them, and run one dummy forward; idempotent.

        Raises ValueError when the directory holds no model (the message says how to create one).
        """
        if self.is_warm:
            return
        from PIL import Image as PILImage
        from transformers import AutoProcessor

        self._model_id = clip_model_id(self._model_dir, self._precision, self._backend)
        self._dim = clip_dim(self._model_dir)
        processor = AutoProcessor.from_pretrained(self._model_dir)
        towers: tuple[Tower, Tower]
        if self._backend == "onnx":
            from mmrag.towers import onnx_clip_towers

            towers, device = onnx_clip_towers(self._model_dir, self._precision, self._threads), "cpu"
        else:
            towers, device = self._torch_towers()
        # set together, after both loaded: is_warm must never see half a model
        self._towers, self._processor, self._device = towers, processor, device
        self.encode_images([PILImage.new("RGB", (224, 224))])  # any size: the processor resizes it
        self.encode_texts(["warm up"])

    def _torch_towers(self) -> tuple[tuple[Tower, Tower], str]:
        import torch
        from transformers import CLIPModel

        from mmrag.towers import ClipImageTower, ClipTextTower, TorchTower

        if self._threads > 0:
            torch.set_num_threads(self._threads)
        device = self._requested_device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = _resolve_dtype(self._precision)
        # transformers types `.to` through a decorator that mypy reads as taking the model, not a device
        model = CLIPModel.from_pretrained(self._model_dir, dtype=dtype).to(device).eval()  # type: ignore[arg-type]
        towers = (TorchTower(ClipImageTower(model), device, dtype), TorchTower(ClipTextTower(model), device))
        return towers, device

    def encode_images(self, images: Sequence[Image]) -> np.ndarray:
        """(n, dim) float32 unit rows, in input order; RuntimeError before `warm_up()`."""
        return self._encode(list(images), self._image_features)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 unit rows; texts longer than the context are truncated. RuntimeError before `warm_up()`."""
        return self._encode(list(texts), self._text_features)

    def _encode(self, items: list[Any], features: Callable[[list[Any]], np.ndarray]) -> np.ndarray:
        if not self.is_warm:
            raise RuntimeError(f"ClipEncoder({self._model_dir}) is not loaded: call warm_up() before encoding")
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = [
            unit_rows(features(items[start : start + _ENCODE_BATCH])) for start in range(0, len(items), _ENCODE_BATCH)
        ]
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def _image_features(self, images: list[Image]) -> np.ndarray:
        assert self._towers is not None and self._processor is not None  # guarded by _encode
        pixels = self._processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return self._towers[0].run({"pixel_values": pixels.numpy()})

    def _text_features(self, texts: list[str]) -> np.ndarray:
        assert self._towers is not None and self._processor is not None  # guarded by _encode
        tokens = self._processor.tokenizer(texts, padding=True, truncation=True, return_tensors="np")
        return self._towers[1].run({"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]})


def _merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged: list[str] = []
    i = 0
    while i < len(symbols):
        if symbols[i : i + 2] == pair:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)


def _learn_merges(corpus: Iterable[str], template: CLIPTokenizer, budget: int) -> list[tuple[str, str]]:
    """Classic BPE: repeatedly merge the most frequent adjacent pair, ties broken by the pair's text.

    The `tokenizers` BpeTrainer breaks count ties by hash-map order, so two runs on one corpus can give different
    vocabularies; counting here keeps the tokenizer, and so a seeded model, reproducible.
    """
    backend = template.backend_tokenizer
    words: Counter[tuple[str, ...]] = Counter()
    for text in corpus:
        # CLIP's own normalizer and pre-tokenizer, so the merges fit the pipeline that applies them
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
            words[(*word[:-1], word[-1] + "</w>")] += 1
    merges: list[tuple[str, str]] = []
    while len(merges) < budget:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in pairwise(symbols):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        words = Counter({_merge_pair(symbols, best): count for symbols, count in words.items()})
    return merges


def build_clip_tokenizer(corpus: Iterable[str], vocab_size: int = 1000) -> CLIPTokenizer:
    """A CLIP byte-level BPE (lowercase, ``</w>`` suffix) learned from `corpus`; the same corpus gives the same
    tokenizer. Like real CLIP: every byte and byte+``</w>`` is a token, then merges, then ``<|startoftext|>`` and
    ``<|endoftext|>`` as the last two ids; bos/eos wrap every sequence; pad = eos. The class is transformers 5's
    `CLIPTokenizer`, also exported as `CLIPTokenizerFast`.

    Raises ValueError when `vocab_size` cannot hold the 512 byte tokens and the 2 special tokens.
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # sorted: the library returns it in set order
    base = alphabet + [symbol + "</w>" for symbol in alphabet]
    budget = vocab_size - len(base) - 2
    if budget < 0:
        raise ValueError(f"CLIP tokenizer vocab_size {vocab_size} < {len(base) + 2} (bytes, bytes+</w>, 2 specials)")
    template = CLIPTokenizer(vocab={symbol: i for i, symbol in enumerate(base)}, merges=[])
    merges = _learn_merges(corpus, template, budget)
    tokens = list(dict.fromkeys(base + [left + right for left, right in merges]))
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(tokens)},
        merges=merges,  # type: ignore[arg-type]  # the annotation says list[str]; the BPE model needs pairs
        model_max_length=77,
    )


def _small_config(tokenizer: CLIPTokenizer) -> CLIPConfig:
    from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    # eos must be the tokenizer's: text pooling takes the hidden state at the eos position
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=_SMALL_PROJECTION_DIM,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=_SMALL_IMAGE_SIZE,
        patch_size=8,
        projection_dim=_SMALL_PROJECTION_DIM,
    )
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=_SMALL_PROJECTION_DIM)


def _base_config(tokenizer: CLIPTokenizer) -> CLIPConfig:
    """openai/clip-vit-base-patch32's shape (ViT-B/32, 224 px, 512-d), for throughput benchmarks."""
    from transformers import CLIPConfig, CLIPTextConfig

    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPConfig(text_config=text.to_dict())


def write_random_clip(
    out_dir: Path, seed: int = 0, corpus: Iterable[str] | None = None, full_size: bool = False
) -> Path:
    """Save a ~1.1 M-parameter random-init CLIPModel (64 px images, 64-d joint space) with its tokenizer (trained on
    `corpus`, a built-in caption list by default) and image processor into `out_dir`; returns `out_dir`.
    ``full_size`` saves ViT-B/32's shape instead (224 px, 512-d, ~600 MB), for throughput benchmarks.

    Same seed and corpus -> byte-identical files. The global torch RNG is left as it was.
    """
    import torch
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = build_clip_tokenizer(_DEFAULT_CORPUS if corpus is None else corpus)
    config = _base_config(tokenizer) if full_size else _small_config(tokenizer)
    image_side = 224 if full_size else _SMALL_IMAGE_SIZE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_side}, crop_size={"height": image_side, "width": image_side}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir
