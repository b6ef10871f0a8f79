#!/usr/bin/env bash
# Every C++ test under AddressSanitizer + UndefinedBehaviorSanitizer, in its
# own build folder (build-asan/), then the scheduler, repository and server
# tests under ThreadSanitizer (build-tsan/, clang). The Python-driven tests
# run on the normal build in scripts/test.sh.
#
# ThreadSanitizer must see every lock, and Debian's Abseil, protobuf and gRPC
# are not built with it. For Abseil, tests/tsan/absl_mutex_annotations.cc
# tells it what absl::Mutex, CondVar and Notification do; protobuf's inline
# Map code and gRPC's inline callback code are left uninstrumented
# (tests/tsan_ignore.txt). tests/tsan.supp says, case by case, what is left
# unchecked inside and across those libraries and why: gRPC hands a call's
# own objects between its threads through synchronisation TSan cannot see.
# Our side of every call -- the Rank handler, the queues, the workers, the
# repository and hot reload -- is checked.
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
    -E '^(python_tools|deploy_check|deploy_check_slow_prometheus|precision_accuracy|framework_import_check)$'

# ThreadSanitizer: clang, so that library headers can be left out. One
# OpenMP thread: LLVM's libomp, which clang links, is not instrumented either,
# and the threads under test are gRPC's, the scheduler's and the repository's.
CC=clang-14 CXX=clang++-14 cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMASKNET_SANITIZE=thread \
  -DMASKNET_BUILD_BENCHMARKS=OFF -DCMAKE_CXX_FLAGS="-fsanitize-ignorelist=$PWD/tests/tsan_ignore.txt" >/dev/null
tsan_tests=(batch_scheduler_test model_loader_test server_test server_batching_test hot_reload_test tls_test
            shadow_scoring_test)
cmake --build build-tsan -j "$jobs" --target "${tsan_tests[@]}"
for t in "${tsan_tests[@]}"; do
  echo "ThreadSanitizer: $t"
  OMP_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp" \
    timeout --kill-after=30 1800 "build-tsan/tests/$t" --gtest_brief=1
done
