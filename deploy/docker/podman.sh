# Sourced by deploy/docker/build.sh and the image tests: `pm` is podman with the settings that work
# on machines without systemd and with the hybrid cgroup v1 layout (crun refuses it; runc works),
# and the vfs storage driver (no overlay mounts needed). Override with OPERON_PODMAN_FLAGS.
# shellcheck shell=bash
read -r -a _pm_flags <<<"${OPERON_PODMAN_FLAGS:---storage-driver vfs --cgroup-manager cgroupfs --runtime /usr/sbin/runc}"
pm() { podman "${_pm_flags[@]}" "$@"; }
# `pm run` needs these: podman's default limits are refused here ("error setting rlimits").
pm_limits=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
