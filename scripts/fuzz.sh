#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz/ (with
# AddressSanitizer and UndefinedBehaviorSanitizer) and runs each for
# FUZZ_SECONDS (default 60) on a seed corpus made from the fixtures:
#   safetensors_fuzz    the weights file parser
#   model_config_fuzz   the config's text parser and its validation
#   rank_request_fuzz   a Rank request's bytes: parsing, validation, feature
#                       assembly and the forward pass of a small model
# Exits non-zero when a target crashes; the input is left in
# build-fuzz/crashes/<target>/. Copy it into tests/fuzz/regressions/<target>/
# (every run replays those first) once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
scripts/install_deps.sh
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMASKNET_FUZZ=ON \
  -DMASKNET_SANITIZE=address,undefined -DMASKNET_BUILD_BENCHMARKS=OFF >/dev/null
targets=(safetensors model_config rank_request)
cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]/%/_fuzz}"

corpus=build-fuzz/corpus
rm -rf "$corpus" && mkdir -p "$corpus"/{safetensors,model_config,rank_request}
for f in tests/fixtures/*/models/*/*/weights.safetensors models/*/*/weights.safetensors; do
  cp "$f" "$corpus/safetensors/$(echo "$f" | tr / _)"
done
for f in tests/fixtures/*/models/*/*/model_config.pbtxt models/*/*/model_config.pbtxt bench/configs/*.pbtxt; do
  cp "$f" "$corpus/model_config/$(echo "$f" | tr / _)"
done
MASKNET_FUZZ_SEEDS="$corpus/rank_request" build-fuzz/tests/fuzz/rank_request_fuzz -runs=0 >/dev/null 2>&1

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMP_NUM_THREADS=1
status=0
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/crashes/$t"
  dirs=("$corpus/$t")
  [ -d "tests/fuzz/regressions/$t" ] && dirs+=("tests/fuzz/regressions/$t")
  echo "fuzz: $t for ${seconds}s"
  if ! build-fuzz/tests/fuzz/${t}_fuzz -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=20 \
      -artifact_prefix="build-fuzz/crashes/$t/" -print_final_stats=1 "${dirs[@]}" \
      >"build-fuzz/$t.log" 2>&1; then
    echo "fuzz: $t FAILED; the input is in build-fuzz/crashes/$t/ (log: build-fuzz/$t.log)"
    tail -40 "build-fuzz/$t.log"
    status=1
  else
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "build-fuzz/$t.log" | tr '\n' ' '
    echo
  fi
done
exit $status
