"""Resident memory of every deployable after warm-up and after indexing a corpus: the figures the Helm chart's
resource requests and limits start from.

    uv run python -m bench.deploy_rss [--clip-model-dir DIR] [--files local_stack/sample_corpus/*.md]

Starts a local stack (`mmrag stack up`, the Milvus backend, in a temporary state directory on free ports), reads
each service's VmRSS once every service is ready, uploads the files, gives them a minute to pass every stage,
then prints each service's VmRSS and its peak (VmHWM) from /proc. Without
--clip-model-dir it writes the tests' small random CLIP: the embedders' and query service's figures then hold the
runtime without a production CLIP's weights (ViT-B/32 adds ~600 MB in fp32, ~300 MB in fp16).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

SAMPLE = sorted((Path(__file__).resolve().parents[1] / "local_stack" / "sample_corpus").glob("*.md"))


def mmrag(state_dir: Path, *args: str, timeout_s: float = 600) -> str:
    env = {**os.environ, "MMRAG_STATE_DIR": str(state_dir), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "operator_cli", *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )
    if done.returncode != 0:
        raise RuntimeError(f"[bench.deploy_rss] mmrag {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def service_pids(state_dir: Path) -> dict[str, int]:
    """Each running service's pid, from the stack's pidfiles (<state>/logs/<name>.pid.json)."""
    found = {}
    for pidfile in sorted(state_dir.rglob("*.pid.json")):
        pid = int(json.loads(pidfile.read_text())["pid"])
        if Path(f"/proc/{pid}").exists():
            found[pidfile.name.removesuffix(".pid.json")] = pid
    return found


def measure(state_dir: Path, clip_dir: Path, files: list[Path]) -> dict[str, tuple[int, int, int]]:
    mmrag(state_dir, "stack", "up", "--state-dir", str(state_dir), "--clip-model-dir", str(clip_dir))
    try:
        pids = service_pids(state_dir)
        warm = {name: memory_kib(pid)[0] for name, pid in pids.items()}
        mmrag(state_dir, "upload", *map(str, files))
        time.sleep(60)
        return {name: (warm[name], *memory_kib(pid)) for name, pid in pids.items() if Path(f"/proc/{pid}").exists()}
    finally:
        mmrag(state_dir, "stack", "down", "--state-dir", str(state_dir))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deploy_rss", description=__doc__)
    parser.add_argument("--clip-model-dir", type=Path, default=None)
    parser.add_argument("--files", nargs="+", type=Path, default=SAMPLE)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mmrag-rss-") as tmp:
        clip_dir = args.clip_model_dir
        if clip_dir is None:
            from mmrag.clip import write_random_clip

            clip_dir = write_random_clip(Path(tmp) / "clip", seed=0)
        figures = measure(Path(tmp) / "stack", clip_dir, args.files)
    table = Table("service", "RSS ready (MiB)", "RSS after the corpus (MiB)", "peak (MiB)")
    for name, (warm, rss, peak) in sorted(figures.items()):
        table.add_row(name, f"{warm / 1024:.0f}", f"{rss / 1024:.0f}", f"{peak / 1024:.0f}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
