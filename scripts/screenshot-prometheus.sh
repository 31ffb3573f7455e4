#!/usr/bin/env bash
# Screenshot of Prometheus' graph page for the freshness p99 SLI (mmrag:freshness_seconds:p99_5m) of a stack started
# with `mmrag stack up --observability`, by headless Chromium (Debian's `chromium`).
#   bash scripts/screenshot-prometheus.sh [STATE_DIR] [OUT.png] [QUERY]
set -euo pipefail
cd "$(dirname "$0")/.."
state_dir="${1:-${MMRAG_STATE_DIR:-$HOME/.cache/kafka-mmrag/stack}}"
out="${2:-docs/img/prometheus-freshness-p99.png}"
query="${3:-mmrag:freshness_seconds:p99_5m}"
command -v chromium >/dev/null 2>&1 || { echo "chromium is missing -> apt-get install chromium" >&2; exit 1; }
[ -f "$state_dir/observability.json" ] || {
  echo "no observability under $state_dir -> mmrag stack up --observability" >&2; exit 1; }
url="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prometheus_url"])' "$state_dir/observability.json")"
expr="$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$query")"
page="$url/graph?g0.expr=$expr&g0.tab=0&g0.range_input=30m&g0.stacked=0"
mkdir -p "$(dirname "$out")"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,800 \
  --virtual-time-budget=15000 --screenshot="$(realpath -m "$out")" "$page" 2>/dev/null
echo "wrote $out ($page)"
