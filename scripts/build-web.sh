#!/usr/bin/env bash
# Builds the npm package `runwire` (npm/dist) and the demo page that `runwire demo` serves
# (demo-web/dist). Needs the wasm32 target, wasm-bindgen-cli and Node (scripts/install-deps.sh demo).
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }
command -v node >/dev/null || fail "node is missing (scripts/install-deps.sh demo)"
command -v npm >/dev/null || fail "npm is missing (scripts/install-deps.sh demo)"
command -v wasm-bindgen >/dev/null || fail "wasm-bindgen is missing (scripts/install-deps.sh demo)"
# Vite 7 needs Node 20.19 or newer.
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' \
  || fail "Node $(node --version) is too old: the demo page is built with Vite 7, which needs Node >= 20.19"

npm/build.sh
printf '==> demo-web\n' >&2
cd demo-web
[ -d node_modules/vite ] || npm ci --no-audit --no-fund --loglevel=error
npm run --silent build >/dev/null
printf '==> demo-web/dist ready\n' >&2
