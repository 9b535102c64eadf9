#!/usr/bin/env bash
# CI smoke of the benchmark harness: every scenario with a few hundred clients for a few seconds,
# against runwire and the Node `ws` peer (and the floor where it applies: scenarios 1-3), and
# scenario 6 (the npm package in headless Chromium) with a thousand events, and the comparison of
# two SDK builds in Node (the package against itself). Fails when the tool errors or any delivery
# is incomplete (a subscriber failed, an event was missing, duplicated or out of order). The
# numbers of a debug build on a CI machine mean nothing; the full scenarios are run by hand
# (scripts/bench.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || true

(cd bench/peers && npm ci --no-audit --no-fund --loglevel=error)
cargo build --locked -p runwire-relay -p runwire-bench

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
common=(--rounds 1 --relay-bin target/debug/runwire --timeout 60)
with_floor=(--systems runwire,node-ws,floor)
status=0
summary=()
run() {
  local name=$1
  shift
  printf '\n==> runwire-bench %s %s\n' "$name" "$*" >&2
  if target/debug/runwire-bench "$name" "${common[@]}" "$@" >"$out/$name.txt"; then
    summary+=("PASS  $name")
  else
    summary+=("FAIL  $name")
    status=1
  fi
  cat "$out/$name.txt"
}
run idle "${with_floor[@]}" --clients 400 --runs 40
run fanout "${with_floor[@]}" --clients 300 --warmup 1 --duration 2
run many-runs "${with_floor[@]}" --clients 300 --runs 30 --rate 500 --warmup 1 --duration 2
# The floor does not resume, so it has no storm.
run storm --systems runwire,node-ws --clients 300 --runs 10

# Scenario 6: the npm package in headless Chromium, 2 runs of 500 events.
printf '\n==> bench/sdk/throughput.mjs (scenario 6)\n' >&2
npm/build.sh
(cd bench/sdk && npm ci --no-audit --no-fund --loglevel=error)
if RUNWIRE_BIN=target/debug/runwire node bench/sdk/throughput.mjs --runs 2 --events 500 --rounds 1; then
  summary+=("PASS  sdk")
else
  summary+=("FAIL  sdk")
  status=1
fi
# The side-by-side comparison of two builds (bench/sdk/compare.mjs), here the package against itself.
printf '\n==> bench/sdk/compare.mjs npm/dist npm/dist\n' >&2
if node --expose-gc bench/sdk/compare.mjs npm/dist npm/dist --runs 2 --events 500 --rounds 2; then
  summary+=("PASS  sdk-compare")
else
  summary+=("FAIL  sdk-compare")
  status=1
fi

printf '\nbenchmark smoke (runwire, node-ws and the floor, debug builds):\n'
printf '  %s\n' "${summary[@]}"
passed=$(printf '%s\n' "${summary[@]}" | grep -c '^PASS' || true)
printf '%d passed, %d failed\n' "$passed" $((${#summary[@]} - passed))
exit $status
