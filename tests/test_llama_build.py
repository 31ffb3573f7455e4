"""llama.cpp is built for a CPU level every machine of this kind runs, never for the build machine's own CPU.

A wheel built with llama.cpp's default (GGML_NATIVE=ON) on one box crashed the demo on another (SIGSEGV in the AMX
matrix kernels on the first multi-token prompt). These tests read what the installed library was really compiled
for, evaluate a multi-token prompt in a child process (a crash there is a failed test, not a dead test run), and
keep pyproject.toml's uv build settings and the Dockerfile in step.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from consumers.llm_worker.native_build import (
    PORTABLE_LEVEL,
    NativeBuildError,
    beyond_portable,
    check,
    cpu_flags,
    library_features,
)

REPO = Path(__file__).resolve().parents[1]
PORTABLE_ON = {"GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2"}

# llama.cpp's system line of a native build on an AMX machine of this kind (the crash's evidence) and of the
# portable build
NATIVE_AMX_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
    "AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
)
PORTABLE_INFO = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 |"
AMX_CPU = "flags\t\t: fpu sse3 pni ssse3 avx avx2 f16c fma bmi2 avx_vnni avx512f avx512vbmi avx512_vnni " + (
    "avx512_bf16 amx_tile amx_int8 amx_bf16\n"
)
AVX2_CPU = "processor\t: 0\nflags\t\t: fpu pni ssse3 avx avx2 f16c fma bmi2\n"


def uv_build_settings() -> dict[str, str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return dict(config["tool"]["uv"]["config-settings-package"]["llama-cpp-python"])


@pytest.mark.unit
def test_the_uv_build_pins_x86_64_v3_and_nothing_native() -> None:
    defines = {k.removeprefix("cmake.define."): v for k, v in uv_build_settings().items()}
    assert defines["GGML_NATIVE"] == "OFF"
    assert defines["GGML_BACKEND_DL"] == "OFF" and defines["GGML_CPU_ALL_VARIANTS"] == "OFF"
    assert {name for name, value in defines.items() if value == "ON"} == PORTABLE_ON
    beyond = [name for name in defines if re.match(r"GGML_(AVX512|AMX|AVX_VNNI)", name)]
    assert beyond and all(defines[name] == "OFF" for name in beyond)


@pytest.mark.unit
def test_the_dockerfile_builds_llama_cpp_with_the_same_settings() -> None:
    """The image's `uv sync` reads the same pyproject.toml (so the same per-package settings), nothing overrides
    them, and the image build fails when the library it built is not portable."""
    dockerfile = (REPO / "Dockerfile").read_text()
    sync = dockerfile.index("uv sync --frozen")
    assert dockerfile.index("COPY pyproject.toml uv.lock") < sync
    assert not re.search(r"CMAKE_ARGS|GGML_|--config-setting|-C\s", dockerfile), "the flags live in pyproject.toml"
    assert dockerfile.index("consumers.llm_worker.native_build") > sync


@pytest.mark.unit
def test_the_installed_library_is_compiled_for_the_portable_level_only() -> None:
    """Fails on a native build (AVX-512, AMX, AVX-VNNI compiled in); what llama.cpp itself reports, read in a child
    so this test process never loads it."""
    done = subprocess.run(
        [sys.executable, "-m", "consumers.llm_worker.native_build"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    reported = re.search(r"compiled-in CPU features: (.*)", done.stdout)
    assert reported is not None, done.stdout
    features = set(reported.group(1).split(", "))
    assert {"AVX2", "FMA", "F16C"} <= features <= PORTABLE_LEVEL


MULTI_TOKEN_PROMPT = """
import sys
from consumers.llm_worker.models import gguf_path
from llama_cpp import Llama
llm = Llama(model_path=str(gguf_path(sys.argv[1])), n_ctx=256, n_threads=2, seed=0, verbose=False)
out = llm.create_completion("The capital of France is a city called", max_tokens=4, temperature=0)
print("TOKENS", llm.n_tokens, repr(out["choices"][0]["text"]))
"""


@pytest.mark.unit
@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_both_packaged_models_evaluate_a_multi_token_prompt(model: str) -> None:
    """The native build died here (SIGSEGV in eval, exit 139) on every prompt of more than one token."""
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", MULTI_TOKEN_PROMPT, model],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, f"{model}: exit {done.returncode}\n{done.stderr[-2000:]}"
    tokens = re.search(r"TOKENS (\d+) ", done.stdout)
    assert tokens is not None and int(tokens.group(1)) > 8, done.stdout


@pytest.mark.unit
def test_features_are_read_from_llama_cpps_system_line() -> None:
    assert library_features(PORTABLE_INFO) == {"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"}
    assert beyond_portable(library_features(PORTABLE_INFO)) == []
    assert beyond_portable(library_features(NATIVE_AMX_INFO)) == [
        "AMX_INT8",
        "AVX512",
        "AVX512_BF16",
        "AVX512_VBMI",
        "AVX512_VNNI",
        "AVX_VNNI",
    ]
    assert "AVX512" not in library_features("CPU : AVX2 = 1 | AVX512 = 0 |")


@pytest.mark.unit
def test_a_worker_refuses_a_library_this_cpu_cannot_run_and_the_amx_kernels() -> None:
    native = library_features(NATIVE_AMX_INFO)
    with pytest.raises(NativeBuildError, match=r"AMX_INT8.*crash \(SIGSEGV\).*uv sync --frozen --reinstall-package"):
        check(native, cpu_flags(AMX_CPU))
    with pytest.raises(NativeBuildError, match=r"AVX512.*this CPU lacks.*SIGILL.*uv cache clean llama-cpp-python"):
        check(native, cpu_flags(AVX2_CPU))
    check(library_features(PORTABLE_INFO), cpu_flags(AVX2_CPU))  # the portable build runs on both
    check(library_features(PORTABLE_INFO), cpu_flags(AMX_CPU))
