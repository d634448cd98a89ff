#!/usr/bin/env bash
# Drift check: the committed gen/operonv1/ is exactly what gen.sh generates from the contract;
# then gofmt, go vet and the unit tests of the SDK (and the go-website example builds and vets
# against it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
"$here/gen.sh" "$fresh"
if ! diff -r "$here/gen/operonv1" "$fresh"; then
  echo "proto/sdk/go/gen/operonv1 is stale: run proto/sdk/go/gen.sh" >&2
  exit 1
fi
unformatted=$(cd "$here" && gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "not gofmt-ed: $unformatted" >&2
  exit 1
fi
(cd "$here" && go vet -mod=readonly ./... && go test -mod=readonly -race ./...)
example="$here/../../examples/go-website"
unformatted=$(cd "$example" && gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "not gofmt-ed: $unformatted" >&2
  exit 1
fi
(cd "$example" && go vet -mod=readonly ./... && go test -mod=readonly ./...)
