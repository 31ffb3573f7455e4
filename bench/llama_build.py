"""The portable llama.cpp build vs another build, same box, one run: `uv run python -m bench.llama_build
[--other-python PATH]`.

For each packaged GGUF and each Python environment (this project's `.venv`, portable x86-64-v3; ``--other-python``:
e.g. a venv holding a native `GGML_NATIVE=ON` build of the same version): load time, prompt evaluation tokens/s
over a ~300-token prompt, time to the first generated token, and generation tokens/s (greedy, 64 tokens), the
median of ``--runs``. Each measurement runs in a child process of that environment, so a build that crashes is
reported ("crashed: SIGSEGV") instead of ending the bench. Prints the other build's figures as ratios of the
portable one's.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROMPT_WORDS = (
    "Kafka consumer groups split the partitions of a topic between their members, so that each partition is read "
    "by exactly one member while the group runs; when a member leaves, its partitions move to the others. "
) * 6
CHILD = r"""
import json, sys, time
from consumers.llm_worker.models import gguf_path
import llama_cpp
from llama_cpp import Llama
t0 = time.perf_counter()
llm = Llama(model_path=str(gguf_path(sys.argv[1])), n_ctx=1024, n_threads=2, seed=0, verbose=False)
loaded = time.perf_counter() - t0
prompt = llm.tokenize(sys.argv[2].encode())
t1 = time.perf_counter()
llm.eval(prompt)
evaluated = time.perf_counter() - t1
first = None
t2 = time.perf_counter()
n = 0
for token in llm.generate([], temp=0.0, reset=False):
    n += 1
    if first is None:
        first = time.perf_counter() - t2
    if n == 64 or token == llm.token_eos():
        break
generated = time.perf_counter() - t2
info = llama_cpp.llama_print_system_info().decode()
print(json.dumps({"load_s": loaded, "prompt_tokens": len(prompt), "prompt_tok_s": len(prompt) / evaluated,
                  "first_token_s": evaluated + first, "gen_tok_s": n / generated, "info": info}))
"""


def measure(python: str, model: str) -> dict[str, Any]:
    done = subprocess.run(
        [python, "-c", CHILD, model, PROMPT_WORDS], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    if done.returncode != 0:
        reason = signal.Signals(-done.returncode).name if done.returncode < 0 else f"exit {done.returncode}"
        return {"crashed": reason}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def median_of(python: str, model: str, runs: int) -> dict[str, Any]:
    results = [measure(python, model) for _ in range(runs)]
    if any("crashed" in r for r in results):
        return next(r for r in results if "crashed" in r)
    keys = ("load_s", "prompt_tokens", "prompt_tok_s", "first_token_s", "gen_tok_s")
    return {k: statistics.median(float(r[k]) for r in results) for k in keys} | {"info": str(results[0]["info"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other-python", default=None, help="python of an environment with another llama.cpp build")
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    builds = {"portable": sys.executable} | ({"other": args.other_python} if args.other_python else {})
    for model in args.models.split(","):
        figures = {name: median_of(python, model, args.runs) for name, python in builds.items()}
        for name, f in figures.items():
            if "crashed" in f:
                print(f"{model:14} {name:9} crashed: {f['crashed']}")
                continue
            line = (
                f"{model:14} {name:9} load {f['load_s']:.2f} s  prompt {f['prompt_tok_s']:.0f} tok/s "
                f"({f['prompt_tokens']:.0f} tokens)  first token {f['first_token_s']:.2f} s  "
                f"generation {f['gen_tok_s']:.1f} tok/s"
            )
            base = figures["portable"]
            if name != "portable" and "crashed" not in base:
                line += (
                    f"  | vs portable: prompt x{f['prompt_tok_s'] / base['prompt_tok_s']:.2f}, "
                    f"generation x{f['gen_tok_s'] / base['gen_tok_s']:.2f}"
                )
            print(line)
            print(f"{'':25}{str(f['info']).strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
