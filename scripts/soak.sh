#!/usr/bin/env bash
# The chaos soak (see docs/reliability.md): three relays on one redis-server, then three relays on
# a 3-node Redis Cluster, each for SECONDS (default 1800) of publishing while relays are SIGKILLed
# and restarted, Redis is SIGKILLed and restarted and client connections are cut. Fails unless
# every acknowledged event reached every subscriber exactly once, with no panic and relay memory
# under the bound. Release builds.
#
#   scripts/soak.sh                          # 30 minutes per variant, 2,000 subscribers, 200 runs
#   CLIENTS=500 RUNS=50 scripts/soak.sh 600  # a lighter run
#   scripts/soak.sh 600 --redis-loses-data   # Redis without persistence: resets are counted
#   VARIANTS=cluster scripts/soak.sh 300     # one variant
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-1800}
shift || true
ulimit -n 65536 2>/dev/null || true
command -v redis-server >/dev/null || { echo "soak: redis-server is missing (scripts/install-deps.sh test)" >&2; exit 1; }

cargo build --locked --release -p runwire-relay -p runwire-bench
status=0
for variant in ${VARIANTS:-standalone cluster}; do
  printf '\n==> soak: %s Redis, %ss\n' "$variant" "$seconds" >&2
  target/release/runwire-bench soak --redis-mode "$variant" --duration "$seconds" \
    --clients "${CLIENTS:-2000}" --runs "${RUNS:-200}" --rate "${RATE:-200}" \
    --relay-bin target/release/runwire --dir "target/soak/$variant" "$@" || status=1
done
exit $status
