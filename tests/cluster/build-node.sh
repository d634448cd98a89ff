#!/usr/bin/env bash
# Builds the node's Kubernetes binaries — kubelet and kube-scheduler — from the same Go module graph
# as the plane (tests/cluster/kube-bins, one k8s.io/kubernetes version) into
# ~/.cache/operon/kube-bins-<version>/, only when one is missing. Prints the bin dir on stdout.
# build.sh stays as it is (the shared plane needs only etcd, kube-apiserver, KCM and kubectl).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mod="$here/kube-bins"
K8S_VERSION=$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$mod/go.mod")
[ -n "$K8S_VERSION" ] || { echo "build-node.sh: cannot read the k8s.io/kubernetes version from $mod/go.mod" >&2; exit 1; }
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
BIN="$CACHE/kube-bins-$K8S_VERSION"
log() { echo "[cluster/build-node] $*" >&2; }

need=()
for b in kubelet kube-scheduler; do
  [ -x "$BIN/$b" ] || need+=("$b")
done
if [ ${#need[@]} -eq 0 ]; then echo "$BIN"; exit 0; fi

command -v go >/dev/null || { log "Go is required (apt-get install golang or https://go.dev); not found on PATH"; exit 1; }
mkdir -p "$BIN"
# Upstream builds both static (hack/lib/golang.sh), with the same tags and version ldflags as build.sh.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
minor=$(echo "$K8S_VERSION" | cut -d. -f2)
P=k8s.io/component-base/version
LDF="-s -w -X $P.gitVersion=$K8S_VERSION -X $P.gitMajor=1 -X $P.gitMinor=$minor -X $P.gitTreeState=clean -X $P.buildDate=1970-01-01T00:00:00Z"
cd "$mod"
for b in "${need[@]}"; do
  start=$(date +%s)
  log "building $b (cold: several minutes on 2 cores)..."
  tmp="$BIN/.$b.tmp"
  nice -n 19 go build -trimpath -tags selinux,notest -ldflags "$LDF" -o "$tmp" "k8s.io/kubernetes/cmd/$b"
  mv "$tmp" "$BIN/$b"   # atomic: a half-built binary never looks finished
  log "built $b in $(( $(date +%s) - start ))s"
done
echo "$BIN"
