#!/usr/bin/env bash
# Builds the tools the Helm chart's tests run (tests/test_helm_chart.py) from the Go module proxy into the project's
# tools, once per version: helm (render, lint --strict) and kube-score (the best-practice linter). A few minutes
# each on 2 cores, then cached; a version change rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

go_tool() {  # name module version
  local name="$1" module="$2" version="$3" stamp="$MMRAG_TOOLS/$1.version"
  if [ -x "$MMRAG_TOOLS/bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    return 0
  fi
  command -v go >/dev/null 2>&1 || {
    echo "setup: go is missing -> install Go 1.24+ (see README.md) to build $name $version" >&2; exit 1; }
  step "$name $version (Go module proxy, built once into $MMRAG_TOOLS/bin)"
  mkdir -p "$MMRAG_TOOLS/bin"
  GOBIN="$MMRAG_TOOLS/bin" go install "$module@$version"
  echo "$version" > "$stamp"
}

go_tool helm helm.sh/helm/v3/cmd/helm "${MMRAG_HELM_VERSION:-v3.21.4}"
go_tool kube-score github.com/zegl/kube-score/cmd/kube-score "${MMRAG_KUBE_SCORE_VERSION:-v1.20.0}"
# grpcurl: tests/test_secure_pipeline.py lists the query service's services over TLS with it (`grpcurl -cacert`)
go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "${MMRAG_GRPCURL_VERSION:-v1.9.4}"
