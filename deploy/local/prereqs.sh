#!/usr/bin/env bash
# Installs what Operon's build, tests and local environment need and a fresh machine may lack.
# Idempotent and quiet when everything is present.
set -euo pipefail
log() { echo "[prereqs] $*" >&2; }
missing_apt=()
# chromium + chromedriver: the dashboard's browser tests (tests/tests/dashboard.rs).
# protoc: the Go example handler's generated code (proto/sdk/go/gen.sh, its drift check).
# podman + runc, mmdebstrap: the images (deploy/docker/build.sh) and their test (tests/packaging/);
# musl-gcc: the static core (ring's C code) that the images and the wheel carry; readelf: its check.
# containerd (+ ctr) and the CNI plugins: the real node of tests/cluster/node-up.sh (the pause image
# is compiled with musl-gcc too).
for tool in curl:curl openssl:openssl python3:python3 git:git chromium:chromium chromedriver:chromium-driver \
            protoc:protobuf-compiler podman:podman runc:runc mmdebstrap:mmdebstrap musl-gcc:musl-tools \
            readelf:binutils containerd:containerd /usr/lib/cni/bridge:containernetworking-plugins; do
  command -v "${tool%%:*}" >/dev/null || [ -x "${tool%%:*}" ] || missing_apt+=("${tool#*:}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing_apt+=(python3-venv)
if [ ${#missing_apt[@]} -gt 0 ]; then
  log "installing from Debian: ${missing_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${missing_apt[@]}" >/dev/null
fi
# The control plane is built from Go modules by tests/cluster/build.sh and needs Go >= 1.24
# (only when the binaries are not cached yet); the Go example handler (proto/examples/go/) is
# built and vetted by every test run.
go_ok() { command -v go >/dev/null && go version | grep -Eq 'go1\.(2[4-9]|[3-9][0-9])'; }
if ! go_ok; then
  log "Go >= 1.24 is required for the Go example handler (proto/examples/go/); found: $(go version 2>/dev/null || echo none)"
  exit 1
fi
# helm for the deployment tests (tests/cluster/build-helm.sh), also built from its Go module.
if ! go_ok && [ ! -x "${OPERON_CACHE:-$HOME/.cache/operon}/helm-$(awk '$1=="require" && $2=="helm.sh/helm/v3" {print $3}' "$(dirname "$0")/../../tests/cluster/helm/go.mod")/helm" ]; then
  log "Go >= 1.24 is required to build helm for the deployment tests; found: $(go version 2>/dev/null || echo none)"
  exit 1
fi
if ! command -v cargo >/dev/null; then
  log "Rust is missing: install rustup and the toolchain pinned in rust-toolchain.toml" >&2
  exit 1
fi
# The static core (the wheel, the images): Rust's musl target.
musl="$(uname -m)-unknown-linux-musl"
if [ ! -d "$(rustc --print target-libdir --target "$musl" 2>/dev/null)" ]; then
  log "adding Rust's $musl target (rustup target add)"
  rustup target add "$musl" >/dev/null
fi
