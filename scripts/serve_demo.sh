#!/usr/bin/env bash
# Installs what is missing, builds, and serves the bundled demo model
# (models/home_timeline) on port 50051. Extra arguments go to masknet_server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh --target masknet_server masknet_client
echo "serving models/ on port 50051; try: build/tools/masknet_client --target=localhost:50051"
exec build/server/masknet_server --model_root=models "$@"
