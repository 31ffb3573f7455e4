"""Embedder throughput: the bare model vs the same work end to end through Kafka, measured in one run.

    uv run python -m bench.embedders [--images 320] [--texts 320] [--clip-dir DIR] [--model-batch 16]

For images: (a) CLIP image tower alone on pre-decoded images at the chosen micro-batch, fp32 and bf16;
(b) ObjectEvents on objects.v1 -> vision embedder process (fetch from S3, decode, CLIP, transaction) -> committed
embeddings.v1. The same for text chunks (MiniLM; with --clip-text also the CLIP text tower) through the text
embedder. Prints both rates, their ratio, and where the service's time went (its own Prometheus histograms).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from local_stack.stack import Deployment, start_infra, start_services, stop_infra, stop_services
from mmrag.clip import ClipEncoder, cpu_precision_for, write_random_clip
from mmrag.ids import object_id
from mmrag.object_store import S3ObjectStore
from mmrag.pb.events_pb2 import MediaKind, ObjectEvent
from mmrag.settings import SpaceSettings
from mmrag.space import space_clip_encoder, space_minilm_encoder
from mmrag.text_encoder import TOKEN_BUDGET

# as the deployables run (local_stack.services, the Dockerfile): OpenMP threads sleep at barriers, not spin;
# `OMP_WAIT_POLICY= python -m bench.embedders` (set, empty) runs bare models and services with libgomp's default
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
console = Console()
TEXT_BARE = "bare text model(s)"
WORDS = tuple(
    [
        "kafka",
        "stream",
        "partition",
        "offset",
        "consumer",
        "producer",
        "broker",
        "vector",
        "index",
        "search",
        "image",
        "text",
    ]
)


def synthetic_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """Photo-sized (640x480) JPEGs with smooth gradients and noise, so decode cost is realistic."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = np.linspace(0, 255, 640, dtype=np.float32)[None, :, None] * rng.uniform(0.2, 1.0, (1, 1, 3))
        noise = rng.normal(0, 25, (480, 640, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def synthetic_texts(n: int, words: int = 150, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, words)).encode() for _ in range(n)]


def bare_images(clip_dir: Path, jpegs: list[bytes], batch: int, precision: str) -> float:
    encoder = ClipEncoder(clip_dir, device="cpu", precision=precision)
    encoder.warm_up()
    images = [Image.open(io.BytesIO(j)).convert("RGB") for j in jpegs]
    encoder.encode_images(images[:batch])  # warm the kernels at this batch size
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        encoder.encode_images(images[i : i + batch])
    return len(images) / (time.perf_counter() - start)


def bare_texts(clip_dir: Path, texts: list[bytes], budget: int, args: argparse.Namespace) -> float:
    settings = _space(clip_dir, args)
    minilm = space_minilm_encoder(settings)
    minilm.warm_up()
    clip = space_clip_encoder(settings, "cpu") if args.clip_text else None
    if clip is not None:
        clip.warm_up()
    decoded = [t.decode() for t in texts]
    start = time.perf_counter()
    minilm.encode(decoded, token_budget=budget)
    if clip is not None:
        clip.encode_texts(decoded)
    return len(decoded) / (time.perf_counter() - start)


def _space(clip_dir: Path, args: argparse.Namespace) -> SpaceSettings:
    """The text path's space: --backend and --precision (the image path stays torch, fp32 and bf16 side by side)."""
    return SpaceSettings.model_validate(
        {"clip_model_dir": clip_dir, "encoder_backend": args.backend, "precision": args.precision}
    )


def bare_rates(clip_dir: Path, jpegs: list[bytes], texts: list[bytes], args: argparse.Namespace) -> dict[str, float]:
    rates = {}
    if args.only != "text":
        rates = {f"bare CLIP image {p}": bare_images(clip_dir, jpegs, args.model_batch, p) for p in ("fp32", "bf16")}
    if args.only != "images":
        rates[TEXT_BARE] = bare_texts(clip_dir, texts, args.token_budget, args)
    return rates


def upload(dep: Deployment, prefix: str, blobs: list[bytes], suffix: str) -> list[tuple[str, str]]:
    store = S3ObjectStore(dep.s3_settings(), "bench")
    keys = []
    for i, blob in enumerate(blobs):
        key = f"{prefix}/{i:05d}{suffix}"
        keys.append((key, store.put(dep.bucket, key, blob)["ETag"].strip('"')))
    return keys


def end_to_end(dep: Deployment, service: str, keys: list[tuple[str, str]], kind: int, env: dict[str, str]) -> float:
    """Starts the embedder, publishes one ObjectEvent per key, returns objects/s until all are committed."""
    svc = start_services([dep.service(service, **env)])[0]
    bootstrap, topics = dep.endpoints.bootstrap_servers, dep.env()["MMRAG_TOPIC_PREFIX"]
    follower = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "auto.offset.reset": "latest",
            "isolation.level": "read_committed",
        }
    )
    follower.subscribe([f"{topics}embeddings.v1"])
    while not follower.assignment():
        follower.poll(0.2)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    pids = process_pids(dep, svc.proc.pid if svc.proc else 0)
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    start = time.perf_counter()
    for key, etag in keys:
        event = ObjectEvent(
            object_id=object_id(dep.bucket, key),
            bucket=dep.bucket,
            key=key,
            version=etag,
            media_kind=kind,  # type: ignore[arg-type]  # protobuf enums are ints at run time
            event_time_ms=int(time.time() * 1000),
            source="bench",
        )
        producer.produce(f"{topics}objects.v1", key=event.object_id.encode(), value=event.SerializeToString())
    producer.flush(30)
    wanted = {object_id(dep.bucket, k) for k, _ in keys}
    _follow(follower, wanted, service)
    elapsed = time.perf_counter() - start
    rate = len(keys) / elapsed
    console.print(_profile(svc.probe_url, service))
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    cores = os.cpu_count() or 1
    others = sum(value for name, value in cpu.items() if name != "service")
    console.print(
        f"[dim]CPU seconds during the {elapsed:.1f}s run ({cores} cores = {cores * elapsed:.1f} available): "
        + ", ".join(f"{name} {value:.1f}" for name, value in cpu.items())
        + f"; the co-located infrastructure used {others / (cores * elapsed):.0%} of the machine, the service "
        f"{1000 * cpu['service'] / len(keys):.1f} CPU-ms per item"
    )
    svc.stop()
    follower.close()
    return rate


def cpu_seconds(pid: int) -> float:
    """user+system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_pids(dep: Deployment, service_pid: int) -> dict[str, int]:
    """The processes that share the CPU during a pipeline run: the service and the local infrastructure."""
    state = dep.state_dir
    pids = {
        "service": service_pid,
        "local S3 (moto)": json.loads((state / "moto.json").read_text())["pid"],
        "milvus-lite": json.loads((state / "milvus.json").read_text())["pid"],
        "bench harness": os.getpid(),
    }
    kafka = json.loads((state / "kafka" / "cluster.json").read_text())
    pids["kafka broker"] = kafka["nodes"][0]["pid"]
    return pids


def _follow(follower: Consumer, wanted: set[str], what: str) -> None:
    seen: set[str] = set()
    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(what, total=len(wanted))
        while not wanted <= seen:
            msg = follower.poll(0.5)
            key = msg.key() if msg is not None and not msg.error() else None
            if isinstance(key, bytes):
                seen.add(key.decode())
                progress.update(task, completed=len(seen & wanted))


def _profile(probe_url: str, service: str) -> str:
    """Mean seconds per observation of the service's histograms: where its time went."""
    text = urllib.request.urlopen(probe_url + "/metrics").read().decode()
    parts = []
    for name in (
        "mmrag_fetch_seconds",
        "mmrag_decode_seconds",
        "mmrag_model_seconds",
        "mmrag_extract_seconds",
        "mmrag_text_embed_seconds",
        "mmrag_handle_seconds",
        "mmrag_commit_seconds",
        "mmrag_batch_size",
    ):
        sums = [float(v) for v in re.findall(rf"^{name}_sum(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)]
        counts = [float(v) for v in re.findall(rf"^{name}_count(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)]
        if counts and sum(counts):
            parts.append(
                f"{name.removeprefix('mmrag_')}: total {sum(sums):.2f} over {sum(counts):.0f} (mean "
                f"{sum(sums) / sum(counts):.4f})"
            )
    return f"[dim]{service} profile: " + "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--texts", type=int, default=320)
    parser.add_argument("--model-batch", type=int, default=16)
    parser.add_argument("--token-budget", type=int, default=TOKEN_BUDGET, help="the text embedder's default")
    parser.add_argument("--clip-text", action="store_true", help="text chunks through CLIP's text tower as well")
    parser.add_argument("--clip-dir", type=Path, help="default: a random-init ViT-B/32 written once to a temp dir")
    parser.add_argument("--only", choices=("images", "text"), help="measure one path (default: both)")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="the text path's space's")
    parser.add_argument("--precision", default="fp32", help="the text path's space's (onnx: fp32 or int8)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mmrag-bench-"))
    clip_dir = args.clip_dir or write_random_clip(work / "clip-b32", full_size=True)
    jpegs, texts = synthetic_jpegs(args.images), synthetic_texts(args.texts)
    console.rule("bare models, first pass")
    first = bare_rates(clip_dir, jpegs, texts, args)
    console.rule("end to end through Kafka")
    rates = _pipelines(work, clip_dir, jpegs, texts, args)
    console.rule("bare models, second pass")
    second = bare_rates(clip_dir, jpegs, texts, args)  # the better pass is the baseline: a conservative ratio
    rates.update({name: max(first[name], second[name]) for name in first})
    shutil.rmtree(work, ignore_errors=True)
    _report(rates, args)
    console.print(
        "[dim]bare passes before / after the pipelines (the better one is the baseline; their spread is this "
        "machine's noise): " + "; ".join(f"{name} {first[name]:.1f} / {second[name]:.1f}" for name in first)
    )
    return 0


def _pipelines(
    work: Path, clip_dir: Path, jpegs: list[bytes], texts: list[bytes], args: argparse.Namespace
) -> dict[str, float]:
    state = work / "state"
    dep = Deployment(
        state_dir=state,
        endpoints=start_infra(state),
        clip_model_dir=clip_dir,
        topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
    )
    dep.prepare()
    rates = {}
    try:
        env = {"MMRAG_MODEL_BATCH": str(args.model_batch), "MMRAG_MAX_BATCH": str(4 * args.model_batch)}
        if args.only != "text":
            img_keys = upload(dep, "img", jpegs, ".jpg")
            rates["end-to-end images"] = end_to_end(dep, "vision_embedder", img_keys, MediaKind.MEDIA_KIND_IMAGE, env)
        if args.only == "images":
            return rates
        txt_keys = upload(dep, "txt", texts, ".txt")
        # OCR off: the images of the first phase are on objects.v1 too, and this measures the text path alone
        text_env = {
            "MMRAG_TOKEN_BUDGET": str(args.token_budget),
            "MMRAG_MAX_BATCH": "64",
            "MMRAG_OCR_IMAGES": "false",
            "MMRAG_CLIP_TEXT_FOR_TEXT": str(args.clip_text).lower(),
            "MMRAG_ENCODER_BACKEND": args.backend,
            "MMRAG_PRECISION": args.precision,
        }
        rates["end-to-end text"] = end_to_end(dep, "text_embedder", txt_keys, MediaKind.MEDIA_KIND_TEXT, text_env)
    finally:
        stop_services(state)
        stop_infra(state)
    return rates


def _report(rates: dict[str, float], args: argparse.Namespace) -> None:
    table = Table(title=f"embedders: {args.images} images (640x480 JPEG), {args.texts} text chunks (~150 words)")
    table.add_column("path")
    table.add_column("items/s", justify="right")
    for name, rate in rates.items():
        table.add_row(name, f"{rate:.1f}")
    console.print(table)
    if "end-to-end images" in rates:
        fp32, bf16 = rates["bare CLIP image fp32"], rates["bare CLIP image bf16"]
        console.print(f"bf16/fp32 bare image rate: {bf16 / fp32:.2f}")
        # a hint for a new space only: precision is the space's (MMRAG_PRECISION), never chosen per process
        console.print(
            f"precision hint for a new space on this machine: MMRAG_PRECISION={cpu_precision_for(1 / fp32, 1 / bf16)}"
        )
        console.print(
            f"image pipeline (the space's precision, fp32) / bare fp32 model: {rates['end-to-end images'] / fp32:.2f}"
        )
    if "end-to-end text" in rates:
        ratio = rates["end-to-end text"] / rates[TEXT_BARE]
        console.print(f"text pipeline / bare model(s), {args.backend} {args.precision}: {ratio:.2f}")
    cores = os.cpu_count() or 1
    bare = {"image": max(v for k, v in rates.items() if k.startswith("bare CLIP image")) if args.only != "text" else 0}
    bare["text"] = rates.get(TEXT_BARE, 0)
    console.print(
        f"bare model CPU-ms per item when it uses all {cores} cores: "
        + ", ".join(f"{kind} {1000 * cores / rate:.1f}" for kind, rate in bare.items() if rate)
    )


if __name__ == "__main__":
    raise SystemExit(main())
