#!/usr/bin/env bash
# The benchmark command: installs what is missing, builds, and writes
# docs/benchmarks.md (and docs/benchmarks_latency.png) from this machine.
# Takes ~10 minutes; --quick runs a short smoke version.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
exec /usr/bin/python3 bench/run_benchmarks.py "$@"
