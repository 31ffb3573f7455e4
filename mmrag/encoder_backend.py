"""Which runtime encodes a space's vectors, and how that shows in its model ids.

A space's encoders run on `torch` (fp32, bf16 or fp16: bf16/fp16 apply to CLIP only, MiniLM stays fp32) or on
`onnx` (ONNX Runtime; fp32, or int8 by dynamic quantization, for every tower). Both are part of the space's
identity: their vectors differ in the third decimal (int8 more), so the model ids, and so the space id, name them.
"""

from __future__ import annotations

BACKENDS = ("torch", "onnx")
BACKEND_PRECISIONS = {"torch": ("fp32", "bf16", "fp16"), "onnx": ("fp32", "int8")}


def check_backend(backend: str, precision: str) -> None:
    """ValueError naming the settings and what each backend takes when the pair is not one of them."""
    if backend not in BACKENDS:
        raise ValueError(f"encoder backend {backend!r} is not one of {BACKENDS} (MMRAG_ENCODER_BACKEND)")
    if precision not in BACKEND_PRECISIONS[backend]:
        raise ValueError(
            f"precision {precision!r} does not run on the {backend} backend (MMRAG_PRECISION with "
            f"MMRAG_ENCODER_BACKEND={backend}) -> use one of {BACKEND_PRECISIONS[backend]}"
        )


def model_id_suffix(backend: str, precision: str, tower_precision: bool = True) -> str:
    """What a model id adds for the backend and precision: nothing for torch fp32 (so torch fp32 ids stay what they
    always were), ``+bf16``/``+fp16`` on torch where the tower takes the space's precision (``tower_precision``:
    CLIP; MiniLM does not), ``+onnx`` / ``+onnx-int8`` on ONNX Runtime. ValueError for a pair no backend runs."""
    check_backend(backend, precision)
    if backend == "onnx":
        return "+onnx" if precision == "fp32" else f"+onnx-{precision}"
    return f"+{precision}" if tower_precision and precision != "fp32" else ""
