#!/usr/bin/env bash
# Installs what kafka-mmrag needs on a fresh machine and caches it: uv, the locked Python environment, the Kafka
# broker jars (Maven Central) and the apt packages. A second run finds everything cached and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if ! command -v uv >/dev/null 2>&1; then
  step "installing uv (PyPI)"
  python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi

for tool in java mvn; do
  command -v "$tool" >/dev/null 2>&1 || { echo "setup: $tool is missing -> install a JDK 17+ and Maven" >&2; exit 1; }
done

missing_apt=()
for pkg in $(cat scripts/apt-packages.txt); do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing_apt+=("$pkg")
done
if [ ${#missing_apt[@]} -gt 0 ]; then
  step "installing apt packages: ${missing_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_apt[@]}" >/dev/null
fi

step "Python environment (uv sync --frozen, from uv.lock)"
uv sync --frozen

step "Kafka broker jars (Maven Central, cached)"
uv run --frozen mmrag kafka fetch
