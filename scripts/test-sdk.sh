#!/usr/bin/env bash
# The browser SDK (sdk-wasm) and the fault proxy (tests/fault-proxy):
#   1. native unit tests (among them sdk-wasm/tests/contract.rs: the TypeScript declarations, the
#      npm package's event list and docs/protocol.md agree with the protocol crate), the
#      transports' JS side in Node (sdk-wasm/tests/transport.test.mjs), and clippy for wasm32
#      (with `std`, and without it as the npm package);
#   2. the TypeScript declarations type-check (the event union narrows on `event`);
#   3. the wasm-bindgen-test suites in headless Chrome, then headless Firefox, against a real relay
#      started here behind the fault-injecting proxy (both on 127.0.0.1:0, stopped on exit);
#   4. the size of the npm package's .wasm plus its JS glue, gzipped: at most 25,000 bytes.
# A missing browser, driver or tool is an error, never a skipped suite.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { printf 'test-sdk: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }
need() { command -v "$1" >/dev/null || fail "$1 not found ($2); run scripts/install-deps.sh test"; }
need wasm-bindgen "wasm-bindgen-cli"
need wasm-bindgen-test-runner "wasm-bindgen-cli"
need chromium "Debian package chromium"
need geckodriver "cargo install geckodriver"
need node "Node.js"
CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
[ -x "$CHROMEDRIVER" ] || fail "chromedriver not found at $CHROMEDRIVER (Debian package chromium-driver)"
command -v firefox-esr >/dev/null || command -v firefox >/dev/null || fail "firefox not found (Debian package firefox-esr)"
pinned=$(sed -n 's/^wasm-bindgen = .*"=\([0-9.]*\)".*/\1/p' sdk-wasm/Cargo.toml)
[ "$(wasm-bindgen --version | awk '{print $2}')" = "$pinned" ] \
  || fail "wasm-bindgen-cli $(wasm-bindgen --version) does not match the pinned wasm-bindgen $pinned"

log "native tests"
cargo test --locked -p runwire-sdk -p runwire-fault-proxy
log "the transports' JS side (Node $(node --version))"
node --test sdk-wasm/tests/transport.test.mjs
log "clippy (wasm32)"
cargo clippy --locked -p runwire-sdk -p runwire-heap --target wasm32-unknown-unknown --all-targets -- -D warnings
cargo clippy --locked -p runwire-sdk --target wasm32-unknown-unknown --lib --no-default-features -- -D warnings

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

log "package build (npm/build.sh) and TypeScript check"
npm/build.sh
pkg=$tmp/pkg
mkdir -p "$pkg"
cp npm/wasm/runwire_sdk.js npm/wasm/runwire_sdk.d.ts npm/wasm/runwire_sdk_bg.wasm "$pkg/"
tsc=sdk-wasm/tests/ts/node_modules/.bin/tsc
[ -x "$tsc" ] || fail "TypeScript not installed in sdk-wasm/tests/ts; run scripts/install-deps.sh test"
cp sdk-wasm/tests/ts/usage.ts "$pkg/usage.ts"
"$tsc" --strict --noEmit --target es2022 --lib es2022,dom,esnext.disposable --module es2022 --moduleResolution node "$pkg/usage.ts" \
  || fail "the TypeScript declarations do not type-check sdk-wasm/tests/ts/usage.ts"

# The size budget: 25 KB gzipped for the .wasm and its glue, as the package ships them
# (docs/benchmarks.md, section 6, says what each part costs).
budget=25000
wasm_gz=$(gzip -9c "$pkg/runwire_sdk_bg.wasm" | wc -c)
js_gz=$(gzip -9c "$pkg/runwire_sdk.js" | wc -c)
log "size: .wasm $(wc -c <"$pkg/runwire_sdk_bg.wasm") B ($wasm_gz B gzipped) + JS glue $(wc -c <"$pkg/runwire_sdk.js") B ($js_gz B gzipped) = $((wasm_gz + js_gz)) B gzipped (budget $budget B)"
[ $((wasm_gz + js_gz)) -le "$budget" ] \
  || fail "the SDK is $((wasm_gz + js_gz)) B gzipped, over its budget of $budget B"

log "starting a relay and the fault proxy"
cargo build --locked -p runwire-relay -p runwire-fault-proxy
secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
wait_line() { # file pattern
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  fail "no '$2' in $1 after 10 s"
}
target/debug/runwire serve --addr 127.0.0.1:0 --secret "$secret" --ping-interval 1s \
  >"$tmp/relay.out" 2>"$tmp/relay.log" &
pids+=($!)
wait_line "$tmp/relay.out" '^listening on http://'
relay=$(sed -n 's#^listening on \(http://[^ ]*\).*#\1#p' "$tmp/relay.out")
target/debug/fault-proxy --upstream "${relay#http://}" >"$tmp/proxy.out" 2>"$tmp/proxy.log" &
pids+=($!)
wait_line "$tmp/proxy.out" '^proxy http://'
read -r _ proxy _ control <"$tmp/proxy.out"

export RUNWIRE_TEST_RELAY=$relay RUNWIRE_TEST_PROXY=$proxy RUNWIRE_TEST_CONTROL=$control
export RUNWIRE_TEST_SECRET=$secret
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-900}
log "browser suites in headless Chrome (relay $relay, proxy $proxy)"
env -u GECKODRIVER CHROMEDRIVER="$CHROMEDRIVER" \
  cargo test --locked -p runwire-sdk --target wasm32-unknown-unknown --release
log "browser suites in headless Firefox"
env -u CHROMEDRIVER GECKODRIVER="$(command -v geckodriver)" \
  cargo test --locked -p runwire-sdk --target wasm32-unknown-unknown --release
log "sdk: all passed"
