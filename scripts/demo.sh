#!/usr/bin/env bash
# Command 1 of the README: set everything up, then run the demo (real Kafka, local S3, milvus-lite, all services).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/lib.sh
export HF_HUB_OFFLINE=1
exec uv run --no-sync mmrag demo "$@"
