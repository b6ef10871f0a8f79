#!/usr/bin/env bash
# Builds the Docker image with Podman (scripts/build_image.sh), starts it,
# and checks it as a deployment would: /readyz on the published HTTP port,
# its HEALTHCHECK, one Rank call on the published gRPC port (with the
# host's build/tools/masknet_client), and a SIGTERM stop that exits 0.
# CI runs it after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
image=masknet-server-ci
scripts/build_image.sh "$image"
export CONTAINERS_CONF="$PWD/build/containers.conf"

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
grpc_port=$(free_port)
http_port=$(free_port)
name="masknet-ci-$$"
cleanup() { podman rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

podman run -d --health-interval=disable --name "$name" -p "127.0.0.1:$grpc_port:50051" -p "127.0.0.1:$http_port:8080" "$image" >/dev/null 2>&1 \
  || { echo "test_image: podman run failed" >&2; exit 1; }
/usr/bin/python3 tests/waiting.py "http://127.0.0.1:$http_port/readyz" --body ready --what "the container's /readyz" \
  || { podman logs "$name"; echo "test_image: not ready" >&2; exit 1; }
# Healthy as Docker judges it: the HEALTHCHECK passes within its 3 retries
# (Docker spaces them by its 10 s interval; 5 s here).
healthy=0
for try in 1 2 3; do
  if podman healthcheck run "$name"; then healthy=1; break; fi
  if ((try < 3)); then sleep 5; fi
done
((healthy)) || { echo "test_image: HEALTHCHECK failed 3 times" >&2; exit 1; }
build/tools/masknet_client --target="127.0.0.1:$grpc_port" --candidates=3 | tail -4
# The body is read whole before it is searched: `curl | grep -q` under
# pipefail fails when grep finds the line in a first chunk and exits while
# curl still writes the rest (curl exits 23), as a loaded machine showed.
metrics=$(curl -sf "http://127.0.0.1:$http_port/metrics") \
  || { echo "test_image: GET /metrics failed (curl exit $?)" >&2; exit 1; }
grep -q '^masknet_rank_calls_total{code="OK"' <<<"$metrics" \
  || { echo "test_image: the Rank call is not in /metrics" >&2; exit 1; }
podman stop -t 30 "$name" >/dev/null 2>&1  # (podman complains here of no systemd for health timers)
code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
podman logs "$name" 2>&1 | tail -3
[[ "$code" == 0 ]] || { echo "test_image: the server exited $code on SIGTERM" >&2; exit 1; }
echo "test_image: the image serves, reports healthy and stops cleanly"
