#!/usr/bin/env bash
# Generates the Go bindings of the operon.v1 contract into gen/operonv1/ (committed), or into
# the directory given as $1 (the drift check: check.sh compares the two).
#
# Tools: protoc (Debian's `protobuf-compiler`, installed with apt-get when missing; also installed
# by deploy/local/prereqs.sh) and the Go plugins at the versions pinned below — the same pins as
# proto/examples/go/gen.sh — built from the Go module proxy into ~/.cache/operon/go-tools/ once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proto_root=$(cd "$here/../.." && pwd)
out=${1:-$here/gen/operonv1}
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
PROTOC_GEN_GO=v1.36.10        # <= google.golang.org/protobuf in go.mod (the runtime)
PROTOC_GEN_GO_GRPC=v1.5.1
tools="$CACHE/go-tools/protoc-gen-go-$PROTOC_GEN_GO-grpc-$PROTOC_GEN_GO_GRPC"

if ! command -v protoc >/dev/null; then
  echo "[sdk-go] installing protoc (apt-get install protobuf-compiler)" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get install -y -q protobuf-compiler >&2 || { $sudo apt-get update -q >&2 && $sudo apt-get install -y -q protobuf-compiler >&2; }
fi
if [ ! -x "$tools/protoc-gen-go" ] || [ ! -x "$tools/protoc-gen-go-grpc" ]; then
  echo "[sdk-go] building protoc-gen-go $PROTOC_GEN_GO and protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC" >&2
  mkdir -p "$tools"
  GOBIN="$tools" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO" >&2
  GOBIN="$tools" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC" >&2
fi

pkg=example.invalid/operon/sdk/go/gen/operonv1
m=""
for f in handler sync tasks; do m="$m,Moperon/v1/$f.proto=$pkg"; done
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PATH="$tools:$PATH" protoc -I"$proto_root" \
  --go_out="$tmp" --go_opt=paths=source_relative"$m" \
  --go-grpc_out="$tmp" --go-grpc_opt=paths=source_relative"$m" \
  operon/v1/handler.proto operon/v1/sync.proto operon/v1/tasks.proto
cp "$tmp"/operon/v1/*.go "$out"/
