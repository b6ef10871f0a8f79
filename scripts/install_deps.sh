#!/usr/bin/env bash
# The single list of packages this project needs (Debian 12 "bookworm").
# Installs only what is missing; safe to run repeatedly. Used by the README's
# commands, by .ci/run and by the Dockerfile.
#
# Usage: scripts/install_deps.sh [--build | --runtime]
#   (none)     everything: build, tests, benchmarks and the Python tooling
#   --build    only what compiling the server and client needs (Docker build stage)
#   --runtime  only the shared libraries the binaries load (Docker runtime stage)
#   --container  Podman and what it needs to build the Dockerfile without a
#              Docker engine or registry (scripts/build_image.sh)
set -euo pipefail

# Compile the server and client.
BUILD_PACKAGES=(
  build-essential cmake pkg-config ccache ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libdnnl-dev ocl-icd-opencl-dev libabsl-dev prometheus-cpp-dev libcivetweb-dev
)
# Tests and benchmarks, and the Python tooling (reference model, trainer,
# exporter, fixtures; run it with /usr/bin/python3).
DEV_PACKAGES=(
  git libgtest-dev libgmock-dev libbenchmark-dev prometheus openssl clang-14 libomp-14-dev
  python3 python3-torch python3-numpy python3-onnx python3-protobuf python3-matplotlib python3-yaml python3-grpcio
)
RUNTIME_PACKAGES=(
  libgrpc++1.51 libprotobuf32 libdnnl2 libgomp1 libabsl20220623 libprometheus-cpp-core1.0 libcivetweb1
)
# Installed with their recommends (netavark and friends).
CONTAINER_PACKAGES=(
  podman debootstrap runc
)

case "${1:-}" in
  "") packages=("${BUILD_PACKAGES[@]}" "${DEV_PACKAGES[@]}") ;;
  --build) packages=("${BUILD_PACKAGES[@]}") ;;
  --runtime) packages=("${RUNTIME_PACKAGES[@]}") ;;
  --container) packages=("${CONTAINER_PACKAGES[@]}") ;;
  *) echo "usage: $0 [--build | --runtime | --container]" >&2; exit 2 ;;
esac

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
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null; then
    echo "install_deps: missing ${missing[*]}; run as root or install sudo" >&2
    exit 1
  fi
  SUDO="sudo"
fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
recommends=--no-install-recommends
if [[ "${1:-}" == "--container" ]]; then recommends=--install-recommends; fi
$SUDO apt-get install -y -qq "$recommends" "${missing[@]}"
