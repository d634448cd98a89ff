#!/usr/bin/env bash
# Builds Operon's two images with podman, no registry needed:
#
#   localhost/operon:<version>        the static core alone (FROM scratch; core.Dockerfile)
#   localhost/operon-kopf:<version>   Debian's Python + the operon-kopf wheel (SDK and core) + the
#                                     example operator (kopf.Dockerfile)
#
#   deploy/docker/build.sh                    build both
#   deploy/docker/build.sh --wheel FILE       use this operon-kopf wheel instead of building one
#   deploy/docker/build.sh --save DIR         also write DIR/operon-<version>.oci.tar and
#                                             DIR/operon-kopf-<version>.oci.tar (OCI archives, for
#                                             `skopeo copy oci-archive:… docker://REGISTRY/…` or
#                                             `podman load`)
#
# The Python image's base is a minimal Debian root filesystem made by mmdebstrap from Debian's
# packages and imported as localhost/operon-base:bookworm-python; the tarball is cached under
# ~/.cache/operon/images/ (keyed by its package list), so only the first build makes it.
# Needs: podman and runc, mmdebstrap, Rust's musl target and musl-gcc (deploy/local/prereqs.sh
# installs them). Prints each step's time.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
wheel=""
save=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheel) wheel=$(realpath "$2"); shift 2 ;;
    --save) save=$(realpath -m "$2"); shift 2 ;;
    *) echo "usage: $0 [--wheel FILE] [--save DIR]" >&2; exit 2 ;;
  esac
done
log() { echo "[docker/build] $*" >&2; }
t_all=$(date +%s)
timed() { # LABEL COMMAND…: run, then print how long it took
  local label=$1 t=$(date +%s); shift
  log "$label…"
  "$@"
  log "$label: done in $(( $(date +%s) - t ))s"
}
# shellcheck source=deploy/docker/podman.sh
. "$root/deploy/docker/podman.sh"

version=$(awk -F'"' '/^\[workspace.package\]/{p=1} p && /^version/{print $2; exit}' Cargo.toml)
arch=$(uname -m)
triple="$arch-unknown-linux-musl"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- the static core ----------------------------------------------------------------------------
timed "the core: cargo build --release --locked -p operon --target $triple" \
  cargo build --release --locked -q -p operon --bin operon --target "$triple"
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
core="$target_dir/$triple/release/operon"
if readelf -lW "$core" | grep -q 'Requesting program interpreter'; then
  log "$core is not static (it names a program interpreter): the scratch image cannot run it"
  exit 1
fi
mkdir -p "$work/core"
cp "$core" "$work/core/operon"

# --- the wheel ----------------------------------------------------------------------------------
if [ -z "$wheel" ]; then
  timed "the operon-kopf wheel: pip wheel --no-deps ./sdk-python-compat" \
    python3 -m pip wheel -q --no-deps --disable-pip-version-check ./sdk-python-compat -w "$work/dist"
  wheel=$(ls "$work"/dist/operon_kopf-*.whl)
fi
mkdir -p "$work/kopf/wheel"
cp "$wheel" "$work/kopf/wheel/"
cp deploy/example/operator.py "$work/kopf/operator.py"

# --- the Python image's base: a minimal Debian root filesystem ----------------------------------
suite=bookworm
packages="python3,python3-venv,ca-certificates"
base_tag="localhost/operon-base:$suite-python"
key=$(printf '%s %s %s' "$suite" "$packages" "$arch" | sha256sum | cut -c1-12)
rootfs="$CACHE/images/debian-$suite-python-$key.tar"
if [ ! -f "$rootfs" ]; then
  mkdir -p "$CACHE/images"
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  # No documentation, manuals or translations; no apt lists or caches in the result.
  timed "the base root filesystem: mmdebstrap $suite ($packages) from $mirror" \
    mmdebstrap --quiet --format=tar --variant=minbase --include="$packages" \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
      "$suite" "$rootfs.part" "$mirror"
  mv "$rootfs.part" "$rootfs"
fi
if [ "$(pm image inspect --format '{{index .Labels "org.operon.rootfs"}}' "$base_tag" 2>/dev/null)" != "$key" ]; then
  timed "importing $rootfs as $base_tag" \
    pm import --quiet --change "LABEL org.operon.rootfs=$key" --change 'CMD ["/bin/bash"]' "$rootfs" "$base_tag" >/dev/null
fi

# The Python image's dependencies, downloaded here for the base's Python (the build itself needs no
# network: no index, and no proxy or CA configuration to carry into the image).
pyver=$(pm run --rm --network none "${pm_limits[@]}" "$base_tag" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
timed "the wheels the image needs (grpcio, its health and reflection services, protobuf) for CPython $pyver on $arch" \
  python3 -m pip download -q --disable-pip-version-check --dest "$work/kopf/wheel" --only-binary=:all: \
    --implementation cp --python-version "$pyver" --abi "cp${pyver/./}" --abi abi3 --abi none \
    --platform "manylinux_2_36_$arch" --platform "manylinux_2_28_$arch" --platform "manylinux2014_$arch" \
    --platform "manylinux_2_17_$arch" "$work/kopf/wheel/$(basename "$wheel")"

# --- the images ---------------------------------------------------------------------------------
timed "localhost/operon:$version (deploy/docker/core.Dockerfile)" \
  pm build --quiet --network host -f deploy/docker/core.Dockerfile -t "localhost/operon:$version" "$work/core" >/dev/null
timed "localhost/operon-kopf:$version (deploy/docker/kopf.Dockerfile)" \
  pm build --quiet --network host --build-arg "BASE=$base_tag" -f deploy/docker/kopf.Dockerfile \
    -t "localhost/operon-kopf:$version" "$work/kopf" >/dev/null
pm image prune -f >/dev/null  # the previous builds' images, now untagged
for image in "localhost/operon:$version" "localhost/operon-kopf:$version"; do
  log "$image: $(pm image inspect --format '{{.Size}}' "$image" | awk '{printf "%.1f MiB", $1/1048576}')"
done

if [ -n "$save" ]; then
  mkdir -p "$save"
  for name in operon operon-kopf; do
    timed "saving $save/$name-$version.oci.tar" \
      pm save --quiet --format oci-archive -o "$save/$name-$version.oci.tar" "localhost/$name:$version"
  done
fi
log "both images built in $(( $(date +%s) - t_all ))s"
