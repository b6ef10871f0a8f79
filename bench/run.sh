#!/usr/bin/env bash
# The benchmark command: installs what is missing, builds, and writes
# docs/benchmarks.md (and its plots) from this machine: the forward pass
# beside ONNX Runtime and PyTorch (fp32 and int8), then the server at each
# precision. Takes ~60 minutes;
# --quick runs a short smoke version.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
# ONNX Runtime, a peer of the forward-pass benchmark, comes from npm. Its
# post-install would download a GPU build; the CPU binding ships in the package.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt-get install -y --no-install-recommends nodejs npm
fi
if [ ! -d bench/peers/node_modules/onnxruntime-node ]; then
  (cd bench/peers && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund)
fi
exec /usr/bin/python3 bench/run_benchmarks.py "$@"
