# Sourced by the README's commands (scripts/demo.sh, scripts/test.sh) and scripts/setup.sh: where the tools that
# setup installs live, so every script finds them in a fresh shell (setup's own `export` dies with its process).
# uv goes into a virtual environment of its own under the project's cache (no PEP 668 refusal, no ~/.local/bin
# that is on nobody's PATH).
MMRAG_CACHE="${MMRAG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kafka-mmrag}"
MMRAG_TOOLS="$MMRAG_CACHE/tools"
export PATH="$MMRAG_TOOLS/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

# Runs a command as root: directly when we are root (no sudo on such machines), else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
