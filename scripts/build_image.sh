#!/usr/bin/env bash
# Builds the Dockerfile into an image with Podman, on a Debian 12 machine with
# no Docker engine and no registry access: the debian:bookworm-slim base is
# made locally with debootstrap from the host's apt mirror.
# Usage: scripts/build_image.sh [image name, default masknet-server]
# Then:  CONTAINERS_CONF=build/containers.conf podman run -d -p 50051:50051 masknet-server
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-masknet-server}"
scripts/install_deps.sh --container

# crun fails on hybrid cgroups; podman's default ulimits exceed root's here.
mkdir -p build
export CONTAINERS_CONF="$PWD/build/containers.conf"
cat > "$CONTAINERS_CONF" <<'CONF'
[engine]
runtime = "runc"
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
CONF

base=docker.io/library/debian:bookworm-slim
if ! podman image exists "$base"; then
  sources=/etc/apt/sources.list.d/debian.sources
  mirror=$(awk '/^URIs:/ {print $2; exit}' "$sources")
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  echo "build_image: making $base from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  cp "$sources" "$rootfs/etc/apt/sources.list.d/debian.sources"
  rm -f "$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - "$base" >/dev/null
fi
podman build --format docker -t "$image" .
echo "build_image: built $image"
