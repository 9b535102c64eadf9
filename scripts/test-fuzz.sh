#!/usr/bin/env bash
# CI step for the fuzz targets (fuzz/), on stable Rust and without libFuzzer: each target replays
# every input of its checked-in corpus (fuzz/corpus/TARGET: seeds, and the inputs of crashes
# found before, kept as regressions), then runs blind random mutations of them for
# FUZZ_SMOKE_SECONDS (default 5). Fails on any panic or broken invariant, writing the input to
# fuzz/artifacts/TARGET/.
#
# Why not `cargo fuzz run` here: nightly, cargo-fuzz and an instrumented release build of the
# relay cost several minutes on a clean machine, more than this step may take. The libFuzzer runs
# (coverage-guided, long) are scripts/fuzz.sh; both run the same functions (fuzz/src/).
set -euo pipefail
cd "$(dirname "$0")/.."
# In CI the mutations follow a fixed seed, so a run is repeatable and a landing is never decided
# by chance; by hand each run draws its own (printed, and settable with FUZZ_SMOKE_SEED).
if [ "${CI:-}" = true ]; then
  export FUZZ_SMOKE_SEED=${FUZZ_SMOKE_SEED:-20261129}
fi
# The workspace's target directory: the relay's dependencies are already built there.
# The fuzz crate is outside the workspace, so scripts/test-rust.sh's fmt and clippy miss it.
cargo fmt --manifest-path fuzz/Cargo.toml --check
CARGO_TARGET_DIR="$PWD/target" cargo clippy --locked --manifest-path fuzz/Cargo.toml \
  --no-default-features --all-targets -- -D warnings
CARGO_TARGET_DIR="$PWD/target" cargo test --locked --manifest-path fuzz/Cargo.toml \
  --no-default-features -- --nocapture
