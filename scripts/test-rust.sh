#!/usr/bin/env bash
# Formatting, lints (native and wasm32) and every cargo test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --locked --target wasm32-unknown-unknown -p runwire-protocol
cargo build --locked --target wasm32-unknown-unknown -p runwire-protocol --no-default-features
cargo test --workspace --locked
