#!/usr/bin/env bash
# Installs what runwire needs on a fresh Debian machine that has a Rust toolchain.
# Idempotent: anything already present is skipped.
#   scripts/install-deps.sh demo   what `runwire demo` needs
#   scripts/install-deps.sh test   what the whole test suite needs
set -euo pipefail
what=${1:-test}
cd "$(dirname "$0")/.."

# The exact wasm-bindgen version the SDK pins (sdk-wasm/Cargo.toml); the CLI must match it.
WASM_BINDGEN_VERSION=0.2.130

log() { printf '==> %s\n' "$*" >&2; }
need_apt=()
want_apt() { dpkg -s "$1" >/dev/null 2>&1 || need_apt+=("$1"); }

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ "$what" = test ]; then
  want_apt redis-server
  want_apt redis-tools
  want_apt chromium
  want_apt chromium-driver
  want_apt firefox-esr
  # The token examples in docs/tokens.md run under Python and Node.
  python3 -c 'import venv, ensurepip' 2>/dev/null || want_apt python3-venv
fi
# The demo page and the npm package are built with Node (scripts/build-web.sh).
command -v node >/dev/null || want_apt nodejs
command -v npm >/dev/null || want_apt npm
# The Debian packages download and unpack in the background while the Rust tools below compile
# (the one waits on the network and the disk, the other on the CPU); waited for before Node is
# used, and a failure stops the script.
apt_pid=
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]} (in the background)"
  (
    sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq "${need_apt[@]}" >/dev/null
  ) &
  apt_pid=$!
fi
wait_apt() {
  if [ -n "$apt_pid" ]; then
    wait "$apt_pid" || { log "apt-get install ${need_apt[*]} failed"; exit 1; }
    apt_pid=
  fi
}
# The tools are built for this machine only and process small inputs: a quick release build
# (no LTO, opt-level 1) takes about half the time of their own profile.
quick_install() {
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=0 cargo install -q "$@"
}

if [ "$what" = test ]; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
# The browser SDK (wasm32 + wasm-bindgen) is in the demo page and in the tests.
if [ "$what" = test ] || [ "$what" = demo ]; then
  rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
  # The nightly the npm package's .wasm is built with (npm/build.sh says why), pinned by date, with
  # its standard library's sources and the wasm32 target: about 15 s.
  nightly=$(cat npm/toolchain)
  if ! rustup run "$nightly" rustc --version >/dev/null 2>&1 \
    || ! rustup component list --toolchain "$nightly" --installed 2>/dev/null | grep -q '^rust-src'; then
    log "rustup toolchain install $nightly (for the npm package's .wasm)"
    rustup toolchain install "$nightly" --profile minimal --component rust-src --target wasm32-unknown-unknown
  fi
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
    log "cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION (a few minutes, once)"
    # Not --locked: the CLI's lock file pins a crate version the registry no longer serves.
    quick_install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
  fi
fi
if [ "$what" = test ] && ! command -v geckodriver >/dev/null; then
  log "cargo install geckodriver (a few minutes, once)"
  quick_install geckodriver
fi
wait_apt
# TypeScript, to type-check the SDK's generated declarations (scripts/test-sdk.sh).
if [ "$what" = test ] && [ ! -x sdk-wasm/tests/ts/node_modules/.bin/tsc ]; then
  log "npm ci in sdk-wasm/tests/ts (TypeScript)"
  npm ci --prefix sdk-wasm/tests/ts --no-audit --no-fund --loglevel=error
fi
# Node >= 22 (its global WebSocket) for the Node client tests (scripts/test-npm.sh), from the npm
# registry (the `node` package carries its own binary) when the machine's node is older.
if [ "$what" = test ] && [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 22 ] \
  && [ ! -x .tools/node22/node_modules/.bin/node ]; then
  log "npm install node@22 into .tools/node22"
  npm install --prefix .tools/node22 --no-audit --no-fund --loglevel=error node@22
fi
log "dependencies ready ($what)"
