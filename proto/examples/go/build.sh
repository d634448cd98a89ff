#!/usr/bin/env bash
# Builds the Go example sync handler service (cached: Go's build cache makes a rebuild of an
# unchanged tree take a moment) and prints the binary's path as its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
bin="$CACHE/go-sync-example/operon-sync-example-go"
mkdir -p "$(dirname "$bin")"
(cd "$here" && go build -mod=readonly -o "$bin" .) >&2
echo "$bin"
