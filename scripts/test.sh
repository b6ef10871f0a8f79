#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs every test (C++ unit,
# parity, gRPC integration and process tests, and the Python tooling's tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 600
