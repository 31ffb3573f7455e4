"""The CPU level llama.cpp was compiled for, checked against this CPU before a model loads.

llama-cpp-python is built from source on the machine that installs it. llama.cpp's default (``GGML_NATIVE=ON``)
compiles for that machine's own CPU, and machines of this kind differ: a native wheel built on one box crashed on
another (SIGSEGV in llama.cpp's AMX matrix kernels on an AMX box) and would die with SIGILL on a box without
AVX-512. The project pins x86-64-v3 (``[tool.uv.config-settings-package.llama-cpp-python]`` in pyproject.toml);
this module reads what the loaded library really was built with (``llama_print_system_info``) so a worker refuses a
library that cannot run here with one line that says what to do, instead of dying in the middle of a prompt.

``python -m consumers.llm_worker.native_build`` prints the library's features and exits 1 when they go beyond the
portable level (the Dockerfile and the tests run it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# llama.cpp's name for an instruction-set feature -> the /proc/cpuinfo flag a CPU must have to run it
ISA_FLAGS = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX_VNNI": "avx_vnni",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
    "AMX_BF16": "amx_bf16",
}
# x86-64-v3: what every x86-64 machine of this kind has; the project's build enables these and nothing above
PORTABLE_LEVEL = frozenset({"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"})
# llama.cpp's AMX matrix kernels crashed (SIGSEGV on the first multi-token prompt) on an AMX machine of this kind
CRASHING = frozenset({"AMX_INT8", "AMX_BF16"})
REBUILD = (
    "rebuild it portably: `uv cache clean llama-cpp-python && uv sync --frozen --reinstall-package "
    "llama-cpp-python` (pyproject.toml's [tool.uv.config-settings-package.llama-cpp-python] pins x86-64-v3)"
)


class NativeBuildError(RuntimeError):
    """The installed llama.cpp was compiled for instructions this CPU lacks, or with kernels known to crash here."""


def library_features(system_info: str) -> frozenset[str]:
    """The instruction-set features ``llama_print_system_info()`` reports as compiled in (``NAME = 1``)."""
    found = {name for name, value in re.findall(r"([A-Z0-9_]+) = (\d+)", system_info) if value != "0"}
    return frozenset(found & ISA_FLAGS.keys())


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first processor in a /proc/cpuinfo text."""
    match = re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    return frozenset(match.group(1).split()) if match else frozenset()


def beyond_portable(features: frozenset[str]) -> list[str]:
    """Compiled-in features above x86-64-v3: a library with any of them is a native build."""
    return sorted(features - PORTABLE_LEVEL)


def check(features: frozenset[str], flags: frozenset[str]) -> None:
    """NativeBuildError when the library needs an instruction this CPU lacks (it would die with SIGILL) or carries
    kernels that crashed on CPUs of this kind (AMX); a portable build always passes."""
    missing = sorted(name for name in features if ISA_FLAGS[name] not in flags)
    if missing and flags:
        raise NativeBuildError(
            f"[llm_worker] llama.cpp library: compiled for {', '.join(missing)}, which this CPU lacks (it would die "
            f"with SIGILL) -> {REBUILD}"
        )
    crashing = sorted(features & CRASHING)
    if crashing:
        raise NativeBuildError(
            f"[llm_worker] llama.cpp library: compiled with {', '.join(crashing)} kernels, which crash (SIGSEGV) on "
            f"the first multi-token prompt on CPUs of this kind (llama.cpp issue 20824) -> {REBUILD}"
        )


def loaded_library_info() -> str:
    """llama.cpp's own system line for the installed llama-cpp-python (imports it)."""
    import llama_cpp

    return bytes(llama_cpp.llama_print_system_info()).decode(errors="replace")


def this_cpu_flags() -> frozenset[str]:
    try:
        return cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux: no flags to hold the library against
        return frozenset()


def check_installed() -> frozenset[str]:
    """Checks the installed library against this CPU (NativeBuildError as in ``check``); returns its features."""
    features = library_features(loaded_library_info())
    check(features, this_cpu_flags())
    return features


def main() -> int:
    info = loaded_library_info()
    features = library_features(info)
    extra = beyond_portable(features)
    print(f"llama.cpp system info: {info.strip()}")
    print(f"compiled-in CPU features: {', '.join(sorted(features)) or '-'}")
    if extra:
        print(f"NOT portable: {', '.join(extra)} above x86-64-v3 (a native build) -> {REBUILD}", file=sys.stderr)
        return 1
    print("portable: x86-64-v3 or below, runs on every x86-64 machine of this kind")
    return 0


if __name__ == "__main__":
    sys.exit(main())
