#!/usr/bin/env bash
# Command 2 of the README (and CI's .ci/run): set everything up, lint, type-check, then the test suite against a real
# Kafka broker. Long fault/soak runs are behind `-m slow`; pass extra pytest arguments through. After setup the
# environment is in step with uv.lock: --no-sync keeps uv from asking the index again (see setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/lib.sh
export HF_HUB_OFFLINE=1
printf '\n==> ruff\n'
uv run --no-sync ruff check .
uv run --no-sync ruff format --check .
printf '\n==> mypy (shared runtime and handlers)\n'
uv run --no-sync mypy mmrag consumers index_updater query_service producers bench operator_cli local_stack deploy
printf '\n==> pytest\n'
exec uv run --no-sync pytest "$@"
