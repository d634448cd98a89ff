#!/usr/bin/env bash
# Throughput with tracing off and on: runs the benchmark (tests/bench/run.sh, same objects and
# handlers) twice — the core without an OTLP endpoint, then exporting every span to a real Jaeger
# (tests/cluster/jaeger-up.sh) — and prints both tables. A figure, not a test. See TRACING.md.
#
#   tests/bench/tracing.sh [any tests/bench/run.sh argument]...
#   tests/bench/tracing.sh --shared-plane --objects 1000 --contender operon-rust --contender operon-py
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
log() { echo "[bench/tracing $(date +%H:%M:%S)] $*" >&2; }
plane_env=$(tests/cluster/jaeger-up.sh) || exit $?; eval "$plane_env"
# Neither run may inherit an endpoint from the caller's environment.
unset OTEL_EXPORTER_OTLP_ENDPOINT
log "tracing OFF"
off=$(tests/bench/run.sh "$@")
log "tracing ON (OTLP to $OPERON_JAEGER_OTLP, every span sampled)"
on=$(tests/bench/run.sh "$@" --core-arg="--otlp-endpoint=$OPERON_JAEGER_OTLP" --core-arg=--service-name=operon-bench)
printf '## Tracing off\n\n%s\n\n## Tracing on (Jaeger at %s)\n\n%s\n' "$off" "$OPERON_JAEGER_OTLP" "$on"
