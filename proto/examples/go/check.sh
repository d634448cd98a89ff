#!/usr/bin/env bash
# Drift check: the committed gen/operonv1/ is exactly what gen.sh generates from the contract,
# and the example builds, passes go vet and its unit tests.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
"$here/gen.sh" "$fresh"
if ! diff -r "$here/gen/operonv1" "$fresh"; then
  echo "proto/examples/go/gen/operonv1 is stale: run proto/examples/go/gen.sh" >&2
  exit 1
fi
(cd "$here" && go vet -mod=readonly ./... && go test -mod=readonly ./...)
