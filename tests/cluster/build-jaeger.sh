#!/usr/bin/env bash
# Builds Jaeger v2 (`cmd/jaeger`, an OpenTelemetry Collector distribution with Jaeger's storage and
# query) from its Go module through the wrapper module tests/cluster/jaeger-bins, into
# ~/.cache/operon/jaeger-<version>/jaeger, only when it is missing. Prints the binary's path.
#
# The wrapper exists because `go install github.com/jaegertracing/jaeger/cmd/jaeger@VERSION` refuses
# a module whose go.mod has `replace` directives (jaegertracing/jaeger#7310). Cold build: ~10 min on
# 2 cores. Jaeger's v2 releases are tagged v2.x but the Go module is v1.x: v1.76.0 == v2.13.0.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mod="$here/jaeger-bins"
VERSION=$(awk '$1=="require" && $2=="github.com/jaegertracing/jaeger" {print $3}' "$mod/go.mod")
[ -n "$VERSION" ] || { echo "build-jaeger.sh: cannot read the Jaeger version from $mod/go.mod" >&2; exit 1; }
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
BIN="$CACHE/jaeger-$VERSION"
log() { echo "[cluster/jaeger] $*" >&2; }
if [ -x "$BIN/jaeger" ]; then echo "$BIN/jaeger"; exit 0; fi

command -v go >/dev/null || { log "Go is required (apt-get install golang or https://go.dev); not found on PATH"; exit 1; }
mkdir -p "$BIN"
# go.sum (committed) pins every module's hash. The checksum database does not know some of the
# OpenTelemetry Collector modules Jaeger needs, so those are checked against go.sum only.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod \
  GONOSUMDB=github.com/open-telemetry/opentelemetry-collector-contrib,go.opentelemetry.io/collector
cd "$mod"
start=$(date +%s)
log "building jaeger $VERSION (cold: ~10 minutes on 2 cores; modules go to $(go env GOMODCACHE))..."
go build -trimpath -ldflags "-s -w" -o "$BIN/.jaeger.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
mv "$BIN/.jaeger.tmp" "$BIN/jaeger"   # atomic: a half-built binary never looks finished
log "built jaeger in $(( $(date +%s) - start ))s"
echo "$BIN/jaeger"
