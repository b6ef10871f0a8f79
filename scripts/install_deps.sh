#!/usr/bin/env bash
# The single list of packages this project needs (Debian 12 "bookworm").
# Installs only what is missing; safe to run repeatedly. Used by the README's
# commands, by .ci/run and by the Dockerfile.
#
# Usage: scripts/install_deps.sh [--runtime]
#   --runtime  only the shared libraries the server binary needs (Docker runtime stage)
set -euo pipefail

BUILD_PACKAGES=(
  build-essential cmake pkg-config ccache git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libdnnl-dev ocl-icd-opencl-dev
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  # Python tooling: reference model, trainer, exporter, fixtures (use /usr/bin/python3).
  python3 python3-torch python3-numpy python3-protobuf
)
RUNTIME_PACKAGES=(
  libgrpc++1.51 libprotobuf32 libdnnl2 libgomp1
)

packages=("${BUILD_PACKAGES[@]}")
if [[ "${1:-}" == "--runtime" ]]; then
  packages=("${RUNTIME_PACKAGES[@]}")
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
