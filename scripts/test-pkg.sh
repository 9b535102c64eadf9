#!/usr/bin/env bash
# The packed `runwire` tarball wherever apps use it: installs it into the npm workspace under
# tests/pkg (one lock file, one `npm ci` for every app), builds the apps — Next.js, Nuxt 3,
# React 18 (server-rendered and hydrated, bundled with esbuild), webpack 5, Vite 5 and 6 — runs the
# Vitest + jsdom test, then drives each app in headless Chromium against relays the tests start
# themselves (tests/pkg/*.test.mjs): the Vite dev server and a plain import-map page too. Prints what each stage cost. Screenshots land in artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/npm-common.sh
need_npm_tools
# Nuxt 3 and Vite need Node 20.19 or newer.
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' \
  || fail "Node $(node --version) is too old: Nuxt and Vite need Node >= 20.19"
export NEXT_TELEMETRY_DISABLED=1 NUXT_TELEMETRY_DISABLED=1

timings=()
stage() { # stage NAME COMMAND...: runs it and records how long it took
  local name=$1 start=$SECONDS
  shift
  log "$name"
  "$@"
  timings+=("$(printf '%4ds  %s' $((SECONDS - start)) "$name")")
}

stage "npm/build.sh" npm/build.sh
stage "cargo build --release -p runwire-relay" cargo build -q --release --locked -p runwire-relay --bin runwire

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd npm && npm pack --silent --pack-destination "$tmp" >/dev/null)
tarball=$(echo "$tmp"/runwire-*.tgz)
[ -f "$tarball" ] || fail "npm pack produced no tarball"

install_apps() {
  (cd tests/pkg && npm ci --no-audit --no-fund --loglevel=error \
    && npm install --no-save --no-audit --no-fund --loglevel=error "$tarball")
  (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
}
stage "npm ci: tests/pkg (every app) + the packed tarball, tests/e2e" install_apps

# Every app's build, one after the other (the machine's cores are better spent on one at a time).
for app in webpack vite vite5 react18 next nuxt; do
  stage "build: $app" bash -c "cd tests/pkg && npm run --silent build -w $app"
done
stage "vitest (jsdom)" bash -c "cd tests/pkg/vitest && ../node_modules/.bin/vitest run"
# In headless Chromium, each against a relay of its own.
for file in bundlers frameworks; do
  stage "browser tests: tests/pkg/$file.test.mjs" timeout 600 node --test --test-concurrency=1 "tests/pkg/$file.test.mjs"
done

printf '%s\n' "time per stage:" "${timings[@]}" >&2
log "packaging tests passed; screenshots in artifacts/"
