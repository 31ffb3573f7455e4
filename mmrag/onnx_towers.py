"""Encoder towers on ONNX Runtime: export from torch once, validate, cache, run.

A tower (MiniLM text, CLIP text, CLIP vision) is exported from its torch module with ``torch.onnx`` (the
TorchScript exporter, which needs no package beyond ``onnx``), int8 by ``onnxruntime.quantization``'s dynamic
quantization of the fp32 file, then checked against torch on a fixed batch: the largest absolute difference of the
unit vectors must stay within the precision's tolerance, else the export is refused (ValueError) and nothing is
cached. Files live under ``<cache>/models/onnx`` keyed by the source model's hash, the tower, the precision and
this module's export format, so every process of a space (embedders, query service) loads the same file; a file
lock lets one process export while the others wait for it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mmrag.settings import cache_dir

if TYPE_CHECKING:
    import onnxruntime
    import torch

log = logging.getLogger(__name__)
EXPORT_FORMAT = 1  # raise when the export changes: files of an older format are exported again
OPSET = 17
# Largest |difference| of a unit vector's components against torch fp32 on the validation batch (see
# docs/architecture.md "Embedders" for the measured values per tower).
TOLERANCE = {"fp32": 1e-4, "int8": 0.05}


class Tower(Protocol):
    """A loaded tower on either backend: a batch's named numpy inputs -> float32 (n, dim) unnormalized vectors."""

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class TowerSpec:
    """How to export one tower: its name, the torch module that computes its (unnormalized) vectors, inputs to
    trace with, a different batch to validate with, and which input axes vary."""

    name: str
    module: Callable[[], torch.nn.Module]
    trace_inputs: Callable[[], dict[str, torch.Tensor]]
    check_inputs: Callable[[], dict[str, torch.Tensor]]
    dynamic_axes: Mapping[str, Mapping[int, str]]


def onnx_cache_dir() -> Path:
    """Where exported towers are kept: ``<cache>/models/onnx`` (MMRAG_CACHE_DIR or ~/.cache/kafka-mmrag)."""
    return cache_dir() / "models" / "onnx"


def tower_path(tower: str, source_hash: str, precision: str) -> Path:
    return onnx_cache_dir() / f"{tower}-{source_hash}-{precision}-f{EXPORT_FORMAT}.onnx"


def cached_tower(spec: TowerSpec, source_hash: str, precision: str) -> Path:
    """The tower's ONNX file for ``precision`` (fp32 or int8), exported and validated on first use; ValueError when
    the export differs from torch beyond TOLERANCE (the file is then not kept)."""
    if precision not in TOLERANCE:
        raise ValueError(f"ONNX tower {spec.name}: precision {precision!r} is not one of {tuple(TOLERANCE)}")
    from filelock import FileLock

    path = tower_path(spec.name, source_hash, precision)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file() and _report_path(path).is_file():
            return path
        _export_and_check(spec, path, precision)
    return path


def export_report(path: Path) -> dict[str, Any]:
    """What the export of ``path`` measured (max_abs_diff vs torch, tolerance, versions)."""
    return dict(json.loads(_report_path(path).read_text()))


def _report_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _export_and_check(spec: TowerSpec, path: Path, precision: str) -> None:
    import torch

    module = spec.module().eval()
    fp32 = path if precision == "fp32" else path.with_name(path.stem + ".fp32-tmp.onnx")
    partial = fp32.with_name(fp32.name + ".partial")
    trace = spec.trace_inputs()  # in the order of the module's forward() parameters
    with torch.inference_mode():
        torch.onnx.export(
            module,
            tuple(trace.values()),
            str(partial),
            input_names=list(trace),
            output_names=["vectors"],
            dynamic_axes={name: dict(axes) for name, axes in spec.dynamic_axes.items()} | {"vectors": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    if precision == "int8":
        _quantize(partial, path)
        partial.unlink()
    else:
        os.replace(partial, path)
    diff = _max_abs_diff(module, path, spec.check_inputs())
    if not diff <= TOLERANCE[precision]:
        path.unlink()
        raise ValueError(
            f"ONNX tower {spec.name} ({precision}) differs from torch by {diff:.3g} on the validation batch, over "
            f"the tolerance {TOLERANCE[precision]} -> keep this space on MMRAG_ENCODER_BACKEND=torch"
        )
    report = {"tower": spec.name, "precision": precision, "max_abs_diff": diff, "tolerance": TOLERANCE[precision]}
    report |= {"torch": torch.__version__, "onnxruntime": _ort_version(), "opset": OPSET}
    _report_path(path).write_text(json.dumps(report, indent=1))
    log.info("exported %s (%s) to %s: max |diff| vs torch %.2e", spec.name, precision, path, diff)


def _quantize(fp32: Path, out: Path) -> None:
    """Dynamic int8: signed weights quantized once per output channel, activations per run; MatMul/Gemm only.
    Per channel kept MiniLM's vectors at cosine ~0.99 with torch's where one scale per tensor gave ~0.96."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = out.with_name(out.name + ".partial")
    quantize_dynamic(
        fp32, partial, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul", "Gemm"]
    )
    os.replace(partial, out)


def _max_abs_diff(module: torch.nn.Module, path: Path, inputs: dict[str, torch.Tensor]) -> float:
    import torch

    with torch.inference_mode():
        expected = unit_rows(module(**inputs).float().numpy())
    got = unit_rows(OnnxTower(path).run({k: v.numpy() for k, v in inputs.items()}))
    return float(np.max(np.abs(got - expected)))


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), float32: how every tower's output is stored."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def session_options(threads: int = 0) -> onnxruntime.SessionOptions:
    """Every graph optimization, ``threads`` intra-op threads (0: one per core), sequential execution; threads do
    not spin waiting for work (spinning took the cores from the other work of the process and host)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxTower:
    """One exported tower in an ONNX Runtime session on the CPU: numpy inputs in, float32 (n, dim) out."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime

        self.path = Path(path)
        self.session = onnxruntime.InferenceSession(
            str(path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The tower's vectors for the inputs the graph takes (others, e.g. an unused mask, are left out)."""
        feed = {name: np.ascontiguousarray(inputs[name]) for name in self.inputs}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)
