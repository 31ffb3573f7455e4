#!/usr/bin/env bash
# Builds Jaeger (the Go module github.com/jaegertracing/jaeger, program cmd/jaeger) from the Go module proxy into the
# project's tools, once per version: `mmrag stack up --observability` runs it as the local tracing backend
# (all-in-one: OTLP in, query API out). `go install module@version` refuses this module (its go.mod has a replace
# directive), so the module is downloaded and built in a copy of its source: ~8 CPU-minutes (10-18 min on a busy
# 2-core box), ~30 s from a warm Go build cache (GOCACHE), then skipped while the binary of this version is there.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

JAEGER_VERSION="${MMRAG_JAEGER_VERSION:-v1.75.0}"
stamp="$MMRAG_TOOLS/jaeger.version"
if [ -x "$MMRAG_TOOLS/bin/jaeger" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$JAEGER_VERSION" ]; then
  exit 0
fi
command -v go >/dev/null 2>&1 || {
  echo "setup: go is missing -> install Go 1.24+ (see README.md) to build Jaeger $JAEGER_VERSION" >&2; exit 1; }
step "Jaeger $JAEGER_VERSION (Go module proxy, built once into $MMRAG_TOOLS/bin; ~10 min on 2 cores)"
src_dir="$(go mod download -json "github.com/jaegertracing/jaeger@$JAEGER_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
work="$(mktemp -d)"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$src_dir" "$work/jaeger"
chmod -R u+w "$work/jaeger"
mkdir -p "$MMRAG_TOOLS/bin"
(cd "$work/jaeger" && GOFLAGS=-mod=mod go build -trimpath -o "$MMRAG_TOOLS/bin/jaeger.partial" ./cmd/jaeger)
mv "$MMRAG_TOOLS/bin/jaeger.partial" "$MMRAG_TOOLS/bin/jaeger"
echo "$JAEGER_VERSION" > "$stamp"
