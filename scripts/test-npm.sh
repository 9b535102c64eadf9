#!/usr/bin/env bash
# The npm package in real browsers and in Node: builds the package and the demo page, packs the
# tarball, installs it into the Vite + React and Vite + Vue apps under tests/, type-checks
# tests/types, runs tests/node (import without side effects and server rendering in Node 20 and
# Node >= 22; following a live run from Node >= 22), then drives the apps and the demo page in
# headless Chromium against relays the tests start themselves (tests/e2e). Screenshots land in
# artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/npm-common.sh
need_npm_tools
# Node >= 22 (global WebSocket) for tests/node: the machine's own node when it is recent enough,
# else the one scripts/install-deps.sh installs from the npm registry.
NODE22=${NODE22:-}
if [ -z "$NODE22" ]; then
  if [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 22 ]; then NODE22=$(command -v node)
  else NODE22=.tools/node22/node_modules/.bin/node; fi
fi
[ -x "$NODE22" ] || fail "Node >= 22 is missing at $NODE22 (scripts/install-deps.sh test)"
[ "$("$NODE22" -p 'process.versions.node.split(".")[0]')" -ge 22 ] || fail "$NODE22 is not Node >= 22"

scripts/build-web.sh
log "cargo build --release -p runwire-relay"
cargo build -q --release --locked -p runwire-relay --bin runwire

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log "npm pack"
(cd npm && npm pack --silent --pack-destination "$tmp" >/dev/null)
tarball=$(echo "$tmp"/runwire-*.tgz)
[ -f "$tarball" ] || fail "npm pack produced no tarball"
# The tarball holds exactly the built package: no sources, no build tooling.
listing=$(tar -tzf "$tarball" | sort)
expected=$(printf 'package/%s\n' README.md package.json \
  dist/src/index.js dist/src/index.d.ts dist/src/follow.js dist/src/follow.d.ts \
  dist/src/client.js dist/src/client.d.ts dist/src/load.js dist/src/load.d.ts \
  dist/react/index.js dist/react/index.d.ts \
  dist/vue/index.js dist/vue/index.d.ts \
  dist/wasm/runwire_sdk.js dist/wasm/runwire_sdk.d.ts dist/wasm/runwire_sdk_bg.wasm | sort)
[ "$listing" = "$expected" ] || fail "unexpected tarball contents:
$listing"

for app in tests/npm-react tests/npm-vue tests/types tests/node; do
  log "$app: npm ci + the packed tarball"
  (cd "$app" && npm ci --no-audit --no-fund --loglevel=error && npm install --no-save --no-audit --no-fund --loglevel=error "$tarball")
done
log "tests/types: tsc --noEmit"
(cd tests/types && node_modules/.bin/tsc -p tsconfig.json)
for app in tests/npm-react tests/npm-vue; do
  log "$app: vite build"
  (cd "$app" && node_modules/.bin/vite build --logLevel warn)
done

log "tests/node: import and server rendering in Node $(node --version) and $("$NODE22" --version)"
node --test tests/node/ssr.test.mjs
"$NODE22" --test tests/node/ssr.test.mjs
log "tests/node: following a live run from Node $("$NODE22" --version)"
timeout 300 "$NODE22" --test tests/node/follow.test.mjs tests/node/run-tokens.test.mjs
timeout 120 "$NODE22" --test tests/node/compat.test.mjs

log "browser tests (headless Chromium)"
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
timeout 600 node --test --test-concurrency=1 tests/e2e/demo.test.mjs tests/e2e/packages.test.mjs
log "npm tests passed; screenshots in artifacts/"
