#!/usr/bin/env bash
# CI step: 60 s of the chaos soak (docs/reliability.md) with 200 subscribers over 20 runs, three
# debug-build relays on one redis-server, a chaos action every ~3 s. Fails on any lost,
# duplicated or unexpected event, a panic in a relay's log, or relay memory over the bound.
# The full soak (2,000 subscribers, 30 minutes, and the Redis Cluster variant): scripts/soak.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || true
command -v redis-server >/dev/null || { echo "test-soak: redis-server is missing (scripts/install-deps.sh test)" >&2; exit 1; }

cargo build --locked -p runwire-relay -p runwire-bench
target/debug/runwire-bench soak --redis-mode standalone --duration "${SOAK_SECONDS:-60}" \
  --clients 200 --runs 20 --rate 100 --chaos-every 3 --drain 60 \
  --relay-bin target/debug/runwire --dir target/soak/ci "$@"
