"""Encoder towers on torch and on ONNX Runtime, bare in process, in one run on one machine.

    uv run python -m bench.encoders [--clip-dir DIR] [--small] [--threads 0] [--seconds 3]

Per tower (MiniLM text, CLIP text, CLIP vision) and backend/precision (torch fp32 and bf16 for CLIP; ONNX Runtime
fp32 and int8): batch-1 latency p50/p99 and batch-16/64 throughput on prepared inputs (tokenized text, preprocessed
pixels), with each ONNX export's max |difference| vs torch; then a query encoded whole by the query service's
encoder (tokenizing, preprocessing, both text towers or an image decoded) for a torch-fp32 space beside an ONNX
space. Default CLIP: a random-init full-size ViT-B/32 written once to a temp dir (same seed: same ONNX cache key).
Each cell has its CPU ms per item beside it (the process's CPU time, every thread's): timings on a shared machine
are noisy, the CPU time much less; compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from mmrag.clip import write_random_clip
from mmrag.model_files import weights_digest
from mmrag.onnx_towers import OnnxTower, Tower, cached_tower, export_report
from mmrag.settings import SpaceSettings
from mmrag.space import space_clip_encoder, space_from_settings, space_minilm_encoder
from mmrag.text_encoder import minilm_dir
from query_service.query_encoder import QueryEncoder

# as the deployables run (local_stack.services, the Dockerfile): OpenMP threads sleep at barriers, not spin
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
console = Console(width=160)  # whole tables in a log too
QUERY = "how does the consumer commit offsets after a rebalance"
CHUNK = " ".join(["kafka stream partition offset consumer producer broker vector index search"] * 15)
BACKENDS = (("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8"))


class Timings(list[float]):
    """Wall seconds per call, and the process's CPU seconds per call (every thread's): on a shared machine the
    wall times carry its load, the CPU time much less of it."""

    cpu_per_call = 0.0


def timed(call: Callable[[], object], seconds: float, least: int) -> Timings:
    """Repeated until ``seconds`` have passed and at least ``least`` calls ran (one unmeasured call first)."""
    call()
    times = Timings()
    cpu = time.process_time()
    deadline = time.perf_counter() + seconds
    while len(times) < least or time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    times.cpu_per_call = (time.process_time() - cpu) / len(times)
    return times


def tower_inputs(tower: str, clip_dir: Path, n: int) -> dict[str, np.ndarray]:
    """``n`` items as the encoders feed them: a query (MiniLM, CLIP text: chunks of ~150 words for MiniLM's
    batches) or preprocessed pixels."""
    from transformers import AutoProcessor, AutoTokenizer

    if tower == "clip-vision":
        processor = AutoProcessor.from_pretrained(clip_dir)
        image = Image.open(io.BytesIO(_jpeg())).convert("RGB")
        return {"pixel_values": processor.image_processor([image] * n, return_tensors="pt")["pixel_values"].numpy()}
    tokenizer = AutoTokenizer.from_pretrained(clip_dir if tower == "clip-text" else minilm_dir())
    text = QUERY if n == 1 else CHUNK
    longest = 77 if tower == "clip-text" else 256  # each model's context
    tokens = tokenizer([text] * n, padding=True, truncation=True, max_length=longest, return_tensors="np")
    return {name: np.asarray(value) for name, value in tokens.items()}


def _jpeg() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def load_tower(tower: str, clip_dir: Path, backend: str, precision: str, threads: int) -> tuple[Tower, str]:
    """The tower as the encoders load it, and the export's max |diff| vs torch ('' on torch)."""
    from mmrag.towers import ClipImageTower, ClipTextTower, MeanPooled, TorchTower, clip_specs, minilm_spec

    if backend == "onnx":
        source = minilm_dir() if tower == "minilm" else clip_dir
        specs = {"minilm": lambda: minilm_spec(source)}
        specs |= {"clip-vision": lambda: clip_specs(source)[0], "clip-text": lambda: clip_specs(source)[1]}
        path = cached_tower(specs[tower](), weights_digest(source), precision)
        return OnnxTower(path, threads), f"{export_report(path)['max_abs_diff']:.1e}"
    import torch
    from transformers import AutoModel, CLIPModel

    if threads:
        torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    if tower == "minilm":
        return TorchTower(MeanPooled(AutoModel.from_pretrained(minilm_dir())), "cpu"), ""
    model = CLIPModel.from_pretrained(clip_dir, dtype=dtype).eval()
    module = ClipImageTower(model) if tower == "clip-vision" else ClipTextTower(model)
    return TorchTower(module, "cpu", dtype if tower == "clip-vision" else None), ""


def measure(model: Tower, inputs: dict[int, dict[str, np.ndarray]], seconds: float) -> list[str]:
    """batch-1 p50 and p99 ms and CPU ms, batch-16 and batch-64 items/s and CPU ms per item, formatted."""
    one = timed(lambda: model.run(inputs[1]), seconds, 20)
    cells = [f"{1000 * np.percentile(one, q):.2f}" for q in (50, 99)] + [f"{1000 * one.cpu_per_call:.2f}"]
    for n in (16, 64):
        batch = timed(partial(model.run, inputs[n]), seconds, 2)
        cells += [f"{n / statistics.median(batch):.1f}", f"{1000 * batch.cpu_per_call / n:.2f}"]
    return cells


def tower_rows(clip_dir: Path, args: argparse.Namespace) -> Table:
    table = Table(title="towers bare in process (prepared inputs)")
    for column in ("tower", "backend", "batch-1 p50 ms", "p99", "CPU ms", "batch-16 /s", "CPU ms", "batch-64 /s"):
        table.add_column(column, justify="left" if column in ("tower", "backend") else "right")
    table.add_column("CPU ms", justify="right")
    table.add_column("max |diff| vs torch", justify="right")
    for tower in ("minilm", "clip-text", "clip-vision"):
        inputs = {n: tower_inputs(tower, clip_dir, n) for n in (1, 16, 64)}
        for backend, precision in BACKENDS:
            if tower == "minilm" and (backend, precision) == ("torch", "bf16"):
                continue  # MiniLM runs in fp32 on torch whatever the space's precision
            model, diff = load_tower(tower, clip_dir, backend, precision, args.threads)
            cells = measure(model, inputs, args.seconds)
            table.add_row(tower, f"{backend} {precision}", *cells, diff)
            console.print(f"[dim]{tower} {backend} {precision}: " + " / ".join(cells))
    return table


def query_rows(clip_dir: Path, args: argparse.Namespace) -> Table:
    """A text query and an image query encoded whole (no cache) by each space's query encoder."""
    table = Table(title="query encoding per space (QueryEncoder, no cache)")
    for column in ("space", "text query p50 ms", "p99", "CPU ms", "image query p50 ms", "p99", "CPU ms"):
        table.add_column(column, justify="left" if column == "space" else "right")
    for backend, precision in (("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")):
        settings = SpaceSettings.model_validate(
            {"clip_model_dir": clip_dir, "encoder_backend": backend, "precision": precision}
            | {"torch_threads": args.threads}
        )
        space = space_from_settings(settings)
        encoder = QueryEncoder(space, space_minilm_encoder(settings), space_clip_encoder(settings, "cpu"))
        encoder.warm_up()
        cells = query_cells(encoder, args.seconds)
        table.add_row(f"{backend}-{precision} ({space.id})", *cells)
        console.print(f"[dim]query {backend} {precision}: " + " / ".join(cells))
    return table


def query_cells(encoder: QueryEncoder, seconds: float) -> list[str]:
    image = _jpeg()
    text = timed(lambda: encoder.encode(QUERY, b""), seconds, 20)
    picture = timed(lambda: encoder.encode("", image), seconds, 10)
    return [f"{1000 * v:.2f}" for t in (text, picture) for v in (*np.percentile(t, [50, 99]), t.cpu_per_call)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip-dir", type=Path, help="default: a random-init ViT-B/32 (or --small) in a temp dir")
    parser.add_argument("--small", action="store_true", help="the tests' ~1.1 M-parameter CLIP instead of ViT-B/32")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: the runtime's default)")
    parser.add_argument("--seconds", type=float, default=3.0, help="least time per measurement")
    parser.add_argument("--only", choices=("towers", "queries"), help="one of the two tables (default: both)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mmrag-encoders-"))
    try:
        clip_dir = args.clip_dir or write_random_clip(work / "clip", full_size=not args.small)
        if args.only != "queries":
            console.print(tower_rows(clip_dir, args))
        if args.only != "towers":
            console.print(query_rows(clip_dir, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
