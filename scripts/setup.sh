#!/usr/bin/env bash
# Installs what kafka-mmrag needs on a fresh machine and caches it: uv, the locked Python environment, the Kafka
# broker jars (Maven Central) and the apt packages. A second run finds everything cached and takes seconds.
# Needs beforehand: Linux with apt, Python 3.11 with pip, a JDK 17+, Maven, cmake and g++ (see README.md).
# MMRAG_SETUP_APT=always runs the apt step even when the packages are there (CI's fresh-machine check).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

for tool in python3 java mvn cmake g++; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "setup: $tool is missing -> install Python 3.11, a JDK 17+, Maven, cmake and g++ (see README.md)" >&2; exit 1; }
done

if ! command -v uv >/dev/null 2>&1; then
  step "installing uv (PyPI) into $MMRAG_TOOLS"
  python3 -m venv "$MMRAG_TOOLS"
  "$MMRAG_TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check uv
fi
uv --version

missing_apt=()
while read -r pkg; do
  [ -n "$pkg" ] || continue
  if [ "${MMRAG_SETUP_APT:-}" = always ] || ! dpkg -s "$pkg" >/dev/null 2>&1; then missing_apt+=("$pkg"); fi
done < scripts/apt-packages.txt
if [ ${#missing_apt[@]} -gt 0 ]; then
  step "installing apt packages: ${missing_apt[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_apt[@]}" >/dev/null
fi

step "Python environment (uv sync --frozen, from uv.lock)"
# Offline first: uv revalidates a cached sdist with the index on every online sync, and an index answering without
# cache validators makes each check a new cache revision, so llama-cpp-python (an sdist only) would be built again
# (6-15 min on 2 cores) on every fresh .venv. Offline, the cached build serves; online only when something is missing.
uv sync --frozen --offline 2>/dev/null || uv sync --frozen
# A .venv synced before the portable build settings (or by hand) may hold a llama.cpp built for another CPU, which
# `uv sync` keeps (same version): check what the library was compiled for and rebuild it when it went native.
if ! uv run --no-sync python -m consumers.llm_worker.native_build >/dev/null 2>&1; then
  step "llama-cpp-python in .venv is not the portable build: rebuilding it (x86-64-v3; ~6 min on 2 cores, then cached)"
  uv sync --frozen --reinstall-package llama-cpp-python
  uv run --no-sync python -m consumers.llm_worker.native_build
fi

step "Kafka broker jars (Maven Central, cached)"
uv run --no-sync mmrag kafka fetch

# Jaeger for `mmrag stack up --observability` (built from the Go module proxy once per version; skipped when cached)
bash scripts/build-jaeger.sh

# helm and kube-score for the Helm chart's tests (Go module proxy, built once per version; skipped when cached)
bash scripts/build-chart-tools.sh
