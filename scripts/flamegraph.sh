#!/usr/bin/env bash
# Profiles one system under scenario 3 and draws a flame graph (docs/benchmarks.md):
#   scripts/flamegraph.sh runwire|floor [OUT.svg]    default OUT: target/profiles/scenario3-SYSTEM.svg
# 4,000 clients over 400 runs at 2,000 events/s; the server is sampled for 8 s (999 Hz, DWARF call
# graphs) once it has been serving for 10 s. Needs `perf` (Debian: linux-perf) and inferno
# (installed with cargo when missing). Loopback only; bounded by the scenario's 20 s.
set -euo pipefail
cd "$(dirname "$0")/.."
system=${1:-}
case "$system" in
  runwire) pattern='runwire serve --addr 127.0.0.1:0' ;;
  floor) pattern='runwire-bench floor --addr 127.0.0.1:0' ;;
  *) sed -n '2,6p' "$0" >&2; exit 2 ;;
esac
out=${2:-target/profiles/scenario3-$system.svg}

command -v perf >/dev/null || { echo "flamegraph: perf is required (apt-get install linux-perf)" >&2; exit 1; }
command -v inferno-flamegraph >/dev/null || cargo install --locked inferno
cargo build --release --locked -p runwire-relay -p runwire-bench
mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

clients=4000 runs=400 rate=2000
target/release/runwire-bench many-runs --systems "$system" --rounds 1 --clients $clients \
  --runs $runs --rate $rate --duration 20 >"$work/bench.log" 2>&1 &
bench=$!
pid=
for _ in $(seq 100); do
  pid=$(pgrep -P "$bench" -f "$pattern" | head -n 1 || true)
  [ -n "$pid" ] && break
  sleep 0.1
done
[ -n "$pid" ] || { cat "$work/bench.log" >&2; echo "flamegraph: $system did not start" >&2; exit 1; }
sleep 10
perf record -q -F 999 --call-graph dwarf,32768 -p "$pid" -o "$work/perf.data" -- sleep 8
wait "$bench" || { cat "$work/bench.log" >&2; exit 1; }
# The measured round's CPU per delivery, for the title.
per_cpu_s=$(grep -o 'delivered events per relay CPU-second [0-9,]*' "$work/bench.log" | head -n 1 | grep -o '[0-9,]*$' | tr -d ,)
us=$(awk -v n="$per_cpu_s" 'BEGIN { printf "%.1f", 1e6 / n }')
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf --all >"$work/folded"
inferno-flamegraph --width 1400 --minwidth 0.3 --colors rust \
  --title "$system, scenario 3: $clients clients over $runs runs, $rate events/s ($us µs of CPU per delivery)" \
  --subtitle "perf record -F 999 --call-graph dwarf, 8 s; kernel frames end in _[k]" \
  <"$work/folded" >"$out"
perf report -i "$work/perf.data" --sort dso --stdio --no-children 2>/dev/null | grep -E '^ +[0-9]' | head -n 5
echo "flamegraph: $out ($per_cpu_s deliveries per CPU-second)"
