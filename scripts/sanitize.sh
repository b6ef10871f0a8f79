#!/usr/bin/env bash
# Every C++ test under AddressSanitizer + UndefinedBehaviorSanitizer, in its
# own build folder (build-asan/). The Python-driven tests run on the normal
# build in scripts/test.sh.
#
# Not ThreadSanitizer: it must see every lock, and Debian's Abseil (whose
# absl::Mutex guards all of the server's shared state) and protobuf are not
# built with it. Tried: every batching test then reports races between
# accesses made under the same absl::Mutex, and protobuf's Map crashes TSan's
# shadow-memory lookup.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
jobs="$(nproc)"

configure() {  # folder, sanitizers
  cmake -S . -B "$1" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMASKNET_SANITIZE="$2" -DMASKNET_BUILD_BENCHMARKS=OFF >/dev/null
}

configure build-asan address,undefined
cmake --build build-asan -j "$jobs"
# One test at a time: the timing-sensitive batching tests (deadlines of tens
# of milliseconds) need the CPUs the sanitizers slow down.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1 \
LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp" \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure --timeout 900 \
    -E '^(python_tools|deploy_check|bf16_accuracy)$'
