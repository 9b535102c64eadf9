# Sourced by the scripts that drive the packed npm package in Node and headless Chromium
# (test-npm.sh, test-pkg.sh): their messages and the tools both need.
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

# node, npm and wasm-bindgen on the PATH, and Chromium at $CHROMIUM (default /usr/bin/chromium),
# exported for the tests.
need_npm_tools() {
  local tool
  for tool in node npm wasm-bindgen; do
    command -v "$tool" >/dev/null || fail "$tool is missing (scripts/install-deps.sh test)"
  done
  CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
  [ -x "$CHROMIUM" ] || fail "$CHROMIUM is missing (scripts/install-deps.sh test)"
  export CHROMIUM
}
