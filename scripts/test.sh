#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs every test (C++ unit,
# parity, gRPC integration and process tests, deploy/ against a real server,
# the Python tooling's tests), the overload and fault drills (short
# version), then builds and checks the Docker image, runs the C++ tests again
# under AddressSanitizer + UndefinedBehaviorSanitizer, and fuzzes the parsers
# for FUZZ_SECONDS (default 60) each.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 600
# Overload and fault drills against a real server, alone on the machine.
MASKNET_SKIP_BUILD=1 scripts/drills.sh --quick
# The Docker image, built and run with Podman (installs Podman if missing).
scripts/test_image.sh
# The C++ tests under ASan + UBSan (build-asan/), then the fuzz targets
# (clang, build-fuzz/).
scripts/sanitize.sh
scripts/fuzz.sh
