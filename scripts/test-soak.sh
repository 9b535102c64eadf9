#!/usr/bin/env bash
# CI step: the chaos soak (docs/reliability.md), short: 60 s with 200 subscribers over 20 runs on
# one redis-server, then 30 s with 100 subscribers over 10 runs on a 3-node Redis Cluster; three
# debug-build relays each time, a chaos action every ~3 s. Fails on any lost, duplicated or
# unexpected event, a subscriber left behind, a panic in a relay's log, or relay memory over the
# bound. The full soak (2,000 subscribers, 30 minutes per variant): scripts/soak.sh.
#
#   SOAK_SECONDS=120 SOAK_CLUSTER_SECONDS=0 scripts/test-soak.sh   # longer standalone, no cluster
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || true
command -v redis-server >/dev/null || { echo "test-soak: redis-server is missing (scripts/install-deps.sh test)" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "test-soak: redis-cli is missing (scripts/install-deps.sh test)" >&2; exit 1; }

cargo build --locked -p runwire-relay -p runwire-bench
target/debug/runwire-bench soak --redis-mode standalone --duration "${SOAK_SECONDS:-60}" \
  --clients 200 --runs 20 --rate 100 --chaos-every 3 --drain 60 \
  --relay-bin target/debug/runwire --dir target/soak/ci "$@"
cluster_seconds=${SOAK_CLUSTER_SECONDS:-30}
if [ "$cluster_seconds" != 0 ]; then
  target/debug/runwire-bench soak --redis-mode cluster --duration "$cluster_seconds" \
    --clients 100 --runs 10 --rate 50 --chaos-every 3 --drain 30 \
    --relay-bin target/debug/runwire --dir target/soak/ci-cluster "$@"
fi
