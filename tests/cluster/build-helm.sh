#!/usr/bin/env bash
# Builds the Helm CLI from its Go module (tests/cluster/helm/go.mod pins the version) into
# ~/.cache/operon/helm-<version>/helm, only when it is missing. Prints the binary's path on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mod="$here/helm"
VERSION=$(awk '$1=="require" && $2=="helm.sh/helm/v3" {print $3}' "$mod/go.mod")
[ -n "$VERSION" ] || { echo "build-helm.sh: cannot read the helm version from $mod/go.mod" >&2; exit 1; }
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
OUT="$CACHE/helm-$VERSION"
if [ -x "$OUT/helm" ]; then echo "$OUT/helm"; exit 0; fi
command -v go >/dev/null || { echo "build-helm.sh: Go is required to build helm" >&2; exit 1; }
mkdir -p "$OUT"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
cd "$mod"
start=$(date +%s)
echo "[cluster/build-helm] building helm $VERSION (cold: a few minutes on 2 cores)..." >&2
go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$VERSION" \
  -o "$OUT/.helm.tmp" helm.sh/helm/v3/cmd/helm
mv "$OUT/.helm.tmp" "$OUT/helm"   # atomic: a half-built binary never looks finished
echo "[cluster/build-helm] built helm in $(( $(date +%s) - start ))s" >&2
echo "$OUT/helm"
