#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs every test (C++ unit,
# parity, gRPC integration and process tests, deploy/ against a real server
# and Prometheus, the Python tooling's tests), the overload and fault drills
# (short version), then builds and checks the Docker image, runs the C++
# tests again under AddressSanitizer + UndefinedBehaviorSanitizer and
# ThreadSanitizer, and fuzzes the parsers for FUZZ_SECONDS (default 60) each.
# Stops at the first stage that fails; prints each stage's time, and a
# summary at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

summary=()
stage() {  # name, command...
  local name=$1 start=$SECONDS
  shift
  echo "test.sh: ${name} ..."
  if "$@"; then
    summary+=("$(printf '%-12s passed in %5d s' "$name" $((SECONDS - start)))")
    echo "test.sh: ${name} passed in $((SECONDS - start)) s"
  else
    local code=$?
    summary+=("$(printf '%-12s FAILED after %5d s (exit %d)' "$name" $((SECONDS - start)) "$code")")
    printf 'test.sh: %s\n' "${summary[@]}" >&2
    exit "$code"
  fi
}

stage install scripts/install_deps.sh
stage build scripts/build.sh
stage ctest ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 600
# Overload and fault drills against a real server, alone on the machine.
stage drills env MASKNET_SKIP_BUILD=1 scripts/drills.sh --quick
# The Docker image, built and run with Podman (installs Podman if missing).
stage image scripts/test_image.sh
# The C++ tests under the sanitizers (build-asan/, build-tsan/), then the
# fuzz targets (clang, build-fuzz/).
stage sanitizers scripts/sanitize.sh
stage fuzz scripts/fuzz.sh
printf 'test.sh: %s\n' "${summary[@]}"
echo "test.sh: everything passed in $SECONDS s"
