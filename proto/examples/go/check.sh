#!/usr/bin/env bash
# The example builds against the Go SDK (proto/sdk/go, whose own checks are its check.sh), and
# passes gofmt, go vet and its unit tests.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
unformatted=$(cd "$here" && gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "not gofmt-ed: $unformatted" >&2
  exit 1
fi
(cd "$here" && go vet -mod=readonly ./... && go test -mod=readonly ./...)
