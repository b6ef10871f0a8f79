#!/usr/bin/env bash
# Overload and fault drills against a real server (tests/drills.py says
# which and what they check). Builds first; pass --quick for the short
# version CI runs, --markdown FILE to write the summary table.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${MASKNET_SKIP_BUILD:-0}" != 1 ]; then
  scripts/install_deps.sh
  scripts/build.sh
fi
exec /usr/bin/python3 tests/drills.py --server build/server/masknet_server \
  --loadgen build/tools/masknet_loadgen "$@"
