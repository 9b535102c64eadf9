#!/usr/bin/env bash
# Fuzzes every target in fuzz/ for SECONDS each (default 600), one after another, with cargo-fuzz
# on nightly (installed here when missing). New inputs go to fuzz/work/TARGET (not checked in);
# the checked-in seeds in fuzz/corpus/TARGET are read, never written. A crash leaves its input in
# fuzz/artifacts/TARGET/ and the script carries on with the next target, then fails.
#
#   scripts/fuzz.sh 3600                 # every target for an hour
#   scripts/fuzz.sh 300 state_fold       # one target
#   FUZZ_IGNORE_CRASHES=1 scripts/fuzz.sh 600 ingest_channel
#                                        # keep fuzzing past crashes (libFuzzer's fork mode),
#                                        # each crash's input kept in fuzz/artifacts/TARGET/
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# The code under test is safe Rust: what the fuzzer looks for is a panic (a failed assertion,
# an out-of-bounds slice, an overflow: debug assertions are on), which needs no sanitizer.
flags=(--sanitizer none --debug-assertions)
extra=()
if [ "${FUZZ_IGNORE_CRASHES:-0}" = 1 ]; then
  extra=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1)
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi
(cd fuzz && cargo +nightly fuzz build "${flags[@]}")

failed=()
for t in "${targets[@]}"; do
  # Both made here: on a clean checkout `find` on a missing folder fails, and the script with it.
  mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
  printf '\n==> fuzz %s for %ss\n' "$t" "$seconds" >&2
  start=$(date +%s)
  # In fork mode libFuzzer exits 0 after crashes: new files in artifacts/ tell.
  before=$(find "fuzz/artifacts/$t" -type f 2>/dev/null | wc -l)
  rc=0
  (cd fuzz && cargo +nightly fuzz run "${flags[@]}" "$t" "work/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    ${extra[@]+"${extra[@]}"}) || rc=$?
  after=$(find "fuzz/artifacts/$t" -type f 2>/dev/null | wc -l)
  if [ "$rc" = 0 ] && [ "$after" = "$before" ]; then
    printf '%s: %ss without a crash\n' "$t" $(($(date +%s) - start)) >&2
  else
    printf '%s: CRASH within %ss; inputs in fuzz/artifacts/%s/\n' "$t" $(($(date +%s) - start)) "$t" >&2
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  printf '\ncrashed: %s\n' "${failed[*]}" >&2
  exit 1
fi
printf '\nno crash in %s targets\n' "${#targets[@]}" >&2
