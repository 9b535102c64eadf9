#!/usr/bin/env bash
# Formatting, lints (native and wasm32) and every cargo test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --locked --target wasm32-unknown-unknown -p runwire-protocol -- -D warnings
cargo clippy --locked --target wasm32-unknown-unknown -p runwire-protocol --no-default-features -- -D warnings
cargo test --workspace --locked
# The browser SDK's build of the protocol: the fold holds `result`/`output_summary` as JSON text.
cargo test --locked -p runwire-protocol --no-default-features
