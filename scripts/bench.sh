#!/usr/bin/env bash
# Runs the benchmark scenarios by hand (docs/benchmarks.md):
#   scripts/bench.sh SCENARIO [runwire-bench options]   idle | fanout | many-runs | storm
#   scripts/bench.sh all [runwire-bench options]        the four, one after another
#   scripts/bench.sh sdk [--runs N --events N --rounds N]  scenario 6: the npm package in Chromium
# Builds the relay and the load tool in release mode and installs the Node peers (npm ci) first.
# Everything runs on loopback; every scenario is bounded in time and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  sed -n '2,7p' "$0" >&2
  exit 2
fi
what=$1
shift

# Tens of thousands of sockets: the relay (a child of the tool) inherits this.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"  # the tool says when it is not enough

if [ "$what" = sdk ]; then
  npm/build.sh
  (cd bench/sdk && npm ci --no-audit --no-fund --loglevel=error)
  cargo build --release --locked -p runwire-relay
  exec node bench/sdk/throughput.mjs "$@"
fi

(cd bench/peers && npm ci --no-audit --no-fund --loglevel=error)
cargo build --release --locked -p runwire-relay -p runwire-bench

bench() { target/release/runwire-bench "$@"; }
if [ "$what" = all ]; then
  for scenario in idle fanout many-runs storm; do
    bench "$scenario" "$@"
  done
else
  bench "$what" "$@"
fi
