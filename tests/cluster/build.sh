#!/usr/bin/env bash
# Builds Kubernetes binaries from their Go modules (tests/cluster/kube-bins, one k8s.io/kubernetes
# version) into ~/.cache/operon/kube-bins-<version>/, only when a binary is missing. Prints the bin
# dir on stdout. By default the plane's: etcd, kube-apiserver, kube-controller-manager and kubectl;
# node-up.sh asks for kubelet and kube-scheduler too.
#
#   tests/cluster/build.sh                          # the plane's, what is missing; print the bin dir
#   tests/cluster/build.sh kubelet kube-scheduler   # these
#   OPERON_CACHE=/elsewhere build.sh                # another cache root
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mod="$here/kube-bins"
# The Kubernetes release is the one go.mod requires: one source of truth.
K8S_VERSION=$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$mod/go.mod")
[ -n "$K8S_VERSION" ] || { echo "build.sh: cannot read the k8s.io/kubernetes version from $mod/go.mod" >&2; exit 1; }
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
BIN="$CACHE/kube-bins-$K8S_VERSION"
log() { echo "[cluster/build] $*" >&2; }

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(etcd kube-apiserver kube-controller-manager kubectl)
need=()
for b in "${wanted[@]}"; do
  case "$b" in
    etcd|kube-apiserver|kube-controller-manager|kubectl|kubelet|kube-scheduler) ;;
    *) log "unknown binary '$b' (etcd, kube-apiserver, kube-controller-manager, kubectl, kubelet, kube-scheduler)"; exit 2 ;;
  esac
  [ -x "$BIN/$b" ] || need+=("$b")
done
if [ ${#need[@]} -eq 0 ]; then echo "$BIN"; exit 0; fi

command -v go >/dev/null || { log "Go is required (apt-get install golang or https://go.dev); not found on PATH"; exit 1; }
mkdir -p "$BIN"
# Upstream builds them static (hack/lib/golang.sh), with these tags and version ldflags.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
minor=$(echo "$K8S_VERSION" | cut -d. -f2)
P=k8s.io/component-base/version
LDF="-s -w -X $P.gitVersion=$K8S_VERSION -X $P.gitMajor=1 -X $P.gitMinor=$minor -X $P.gitTreeState=clean -X $P.buildDate=1970-01-01T00:00:00Z"
cd "$mod"
log "downloading Go modules for Kubernetes $K8S_VERSION (first time: ~1-2 GB into $(go env GOMODCACHE))"
go mod download 2>&1 | tail -n 3 >&2 || true
for b in "${need[@]}"; do
  start=$(date +%s)
  log "building $b (cold: several minutes on 2 cores)..."
  tmp="$BIN/.$b.tmp"
  case "$b" in
    etcd) go build -trimpath -ldflags "-s -w" -o "$tmp" go.etcd.io/etcd/server/v3 ;;
    *) go build -trimpath -tags selinux,notest -ldflags "$LDF" -o "$tmp" "k8s.io/kubernetes/cmd/$b" ;;
  esac
  mv "$tmp" "$BIN/$b"   # atomic: a half-built binary never looks finished
  log "built $b in $(( $(date +%s) - start ))s"
done
echo "$BIN"
