#!/usr/bin/env bash
# Builds the go-website example (cached: Go's build cache makes a rebuild of an unchanged tree
# take a moment) and prints the binary's path as its last line. The path is keyed by the source
# of the example and of the SDK it uses (the `replace` in go.mod), so checkouts of different
# versions sharing the cache never run each other's binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sdk=$(cd "$here/../../sdk/go" && pwd)
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
key=$(cat "$here"/go.mod "$here"/go.sum "$here"/*.go "$sdk"/go.mod "$sdk"/go.sum "$sdk"/*.go \
  "$sdk"/gen/operonv1/*.go | sha256sum | cut -c1-16)
bin="$CACHE/go-website-example/$key/go-website"
mkdir -p "$(dirname "$bin")"
if [ ! -x "$bin" ]; then
  (cd "$here" && go build -mod=readonly -o "$bin.tmp.$$" . && mv "$bin.tmp.$$" "$bin") >&2
fi
echo "$bin"
