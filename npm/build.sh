#!/usr/bin/env bash
# Builds the npm package `runwire` into npm/dist: the SDK compiled to wasm32, bound with
# wasm-bindgen (--target web: the .wasm is fetched with `new URL(…, import.meta.url)`, which
# bundlers such as Vite treat as an asset), and the thin
# TypeScript layer (src/, react/, vue/) compiled next to it. `npm pack` in npm/ then packs it.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd .. && pwd)
log() { printf '==> %s\n' "$*" >&2; }

command -v wasm-bindgen >/dev/null || { echo "error: wasm-bindgen not found (scripts/install-deps.sh demo)" >&2; exit 1; }
command -v node >/dev/null || { echo "error: node not found (scripts/install-deps.sh demo)" >&2; exit 1; }

log "cargo build -p runwire-sdk --target wasm32-unknown-unknown --profile wasm-release"
(cd "$root" && cargo build -q --locked -p runwire-sdk --lib --target wasm32-unknown-unknown --profile wasm-release)
wasm="${CARGO_TARGET_DIR:-$root/target}/wasm32-unknown-unknown/wasm-release/runwire_sdk.wasm"

rm -rf wasm dist
log "wasm-bindgen --target web"
wasm-bindgen --target web --out-dir wasm --out-name runwire_sdk "$wasm"
# No wasm-opt pass: Debian's binaryen rewrites the reference-typed function table of
# wasm-bindgen 0.2.130 output into a module Chromium refuses at `WebAssembly.Table.set`.
# The generated classes declare `[Symbol.dispose]()` (for `using`); name the lib that types it,
# so that apps compiling without skipLibCheck need no extra `lib` entry (TypeScript >= 5.2).
sed -i '1i /// <reference lib="esnext.disposable" />' wasm/runwire_sdk.d.ts

[ -d node_modules/typescript ] || npm ci --no-audit --no-fund --loglevel=error
log "tsc"
node_modules/.bin/tsc -p tsconfig.json
mkdir -p dist/wasm
cp wasm/runwire_sdk.js wasm/runwire_sdk.d.ts wasm/runwire_sdk_bg.wasm dist/wasm/
log "npm/dist ready ($(du -k dist/wasm/runwire_sdk_bg.wasm | cut -f1) KiB wasm)"
