#!/usr/bin/env bash
# Every C++ test under AddressSanitizer + UndefinedBehaviorSanitizer, in its
# own build folder (build-asan/), then the batching and model-repository
# tests under ThreadSanitizer (build-tsan/, clang). The Python-driven tests
# run on the normal build in scripts/test.sh.
#
# ThreadSanitizer must see every lock, and Debian's Abseil, protobuf and gRPC
# are not built with it. For Abseil, tests/tsan/absl_mutex_annotations.cc
# tells it what absl::Mutex, CondVar and Notification do (tests/tsan.supp
# covers the two things it cannot); protobuf's inline Map code is left
# uninstrumented (tests/tsan_ignore.txt), as it crashes TSan's shadow lookup
# otherwise. The gRPC server tests are not run: gRPC hands calls between its
# threads through its own uninstrumented synchronisation, and TSan then
# reports every call's objects as raced (tried: hundreds of reports, all
# inside or across gRPC). The scheduler, the repository and the model they
# drive are what the server's threads share.
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

# ThreadSanitizer: clang, so that protobuf's headers can be left out. One
# OpenMP thread: LLVM's libomp, which clang links, is not instrumented either,
# and the threads under test are the scheduler's and the repository's.
CC=clang-14 CXX=clang++-14 cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMASKNET_SANITIZE=thread \
  -DMASKNET_BUILD_BENCHMARKS=OFF -DCMAKE_CXX_FLAGS="-fsanitize-ignorelist=$PWD/tests/tsan_ignore.txt" >/dev/null
tsan_tests=(batch_scheduler_test model_loader_test)
cmake --build build-tsan -j "$jobs" --target "${tsan_tests[@]}"
for t in "${tsan_tests[@]}"; do
  echo "ThreadSanitizer: $t"
  OMP_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp" \
    "build-tsan/tests/$t" --gtest_brief=1
done
