#!/usr/bin/env bash
# Builds the Go example handler service (cached: Go's build cache makes a rebuild of an unchanged
# tree take a moment) and prints the binary's path as its last line. The path is keyed by the
# source, so checkouts of different versions sharing the cache never run each other's binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
key=$(cd "$here" && cat go.mod go.sum ./*.go ../../sdk/go/go.mod ../../sdk/go/*.go ../../sdk/go/gen/operonv1/*.go | sha256sum | cut -c1-16)
bin="$CACHE/go-sync-example/$key/operon-sync-example-go"
mkdir -p "$(dirname "$bin")"
if [ ! -x "$bin" ]; then
  (cd "$here" && go build -mod=readonly -o "$bin.tmp.$$" . && mv "$bin.tmp.$$" "$bin") >&2
fi
echo "$bin"
