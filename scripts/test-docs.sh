#!/usr/bin/env bash
# Runs the Node and Python token examples of docs/tokens.md, exactly as they appear there, with the
# real `jsonwebtoken` (npm) and `PyJWT` (PyPI), and checks every token they print with the relay's
# own verifier (protocol/examples/verify_token.rs): it must verify, cover the expected run, carry
# the expected scope, sub and lifetime, and be refused under another secret.
#
# Needs python3 (with venv and pip), node and npm; fails if any is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DOC=docs/tokens.md
SECRET='docs-test-secret-0123456789abcdefghijklmnop'
OTHER_SECRET='another-secret-0123456789abcdefghijklmnopq'

fail() {
  printf 'test-docs: FAIL: %s\n' "$*" >&2
  exit 1
}

for tool in python3 node npm; do
  command -v "$tool" >/dev/null || fail "$tool is required (scripts/install-deps.sh test installs it)"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Prints the body of the one fenced code block of $DOC that contains the line $1.
extract() {
  awk -v marker="$1" '
    /^```/ {
      if (inside) { if (hit) { blocks++; out = out body } inside = 0 }
      else { inside = 1; body = ""; hit = 0 }
      next
    }
    inside { body = body $0 "\n"; if ($0 == marker) hit = 1 }
    END { if (blocks != 1) exit 3; printf "%s", out }
  ' "$DOC" || fail "$DOC must have exactly one code block containing the line: $1"
}

cargo build -q --locked -p runwire-protocol --example verify_token
verify_bin=$(cargo metadata -q --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/examples/verify_token
[ -x "$verify_bin" ] || fail "verify_token was not built at $verify_bin"

passed=0
failed=0
check() { # name, expect (ok|refused), verify_token args...
  local name=$1 expect=$2
  shift 2
  if "$verify_bin" "$@" >"$work/claims" 2>"$work/why"; then got=ok; else got=refused; fi
  if [ "$got" = "$expect" ]; then
    passed=$((passed + 1))
    printf 'ok      %s %s\n' "$name" "$(cat "$work/claims")" >&2
  else
    failed=$((failed + 1))
    printf 'FAILED  %s: expected %s, got %s: %s\n' "$name" "$expect" "$got" "$(cat "$work/why")" >&2
  fi
}

# Both examples print a subscribe token for user_42 on run_123 (300 s), then a publish token for
# run_123 (600 s).
check_tokens() { # language, file with the printed tokens
  local lang=$1 out=$2
  [ "$(wc -l <"$out")" -eq 2 ] || fail "$lang example printed $(wc -l <"$out") lines, expected 2 tokens"
  local browser worker
  browser=$(sed -n 1p "$out")
  worker=$(sed -n 2p "$out")
  check "$lang browser token" ok "$SECRET" "$browser" --run run_123 --scope subscribe --sub user_42 --ttl 300
  check "$lang worker token" ok "$SECRET" "$worker" --run run_123 --scope publish --ttl 600
  # The checks above can fail: the same tokens are refused where they should be.
  check "$lang browser token, other secret" refused "$OTHER_SECRET" "$browser"
  check "$lang browser token, other run" refused "$SECRET" "$browser" --run run_999
  check "$lang browser token as publish" refused "$SECRET" "$browser" --scope publish
  check "$lang worker token as subscribe" refused "$SECRET" "$worker" --scope subscribe
}

# Node: jsonwebtoken 9.
mkdir "$work/node"
extract '// mint-token.js (tested by scripts/test-docs.sh)' >"$work/node/mint-token.js"
(
  cd "$work/node"
  echo '{"private":true}' >package.json
  timeout 300 npm install --silent --no-audit --no-fund 'jsonwebtoken@9' >/dev/null
) || fail "npm install jsonwebtoken failed"
RUNWIRE_SECRET=$SECRET timeout 60 node "$work/node/mint-token.js" >"$work/node/tokens" ||
  fail "the Node example failed to run"
check_tokens node "$work/node/tokens"

# Python: PyJWT 2, in a virtual environment of its own.
mkdir "$work/python"
extract '# mint_token.py (tested by scripts/test-docs.sh)' >"$work/python/mint_token.py"
python3 -m venv "$work/python/venv" ||
  fail "python3 -m venv failed (on Debian: apt-get install python3-venv)"
"$work/python/venv/bin/python" -m pip --version >/dev/null 2>&1 || fail "pip is missing in the venv"
timeout 300 "$work/python/venv/bin/python" -m pip install -q --disable-pip-version-check 'PyJWT>=2,<3' ||
  fail "pip install PyJWT failed"
RUNWIRE_SECRET=$SECRET timeout 60 "$work/python/venv/bin/python" "$work/python/mint_token.py" \
  >"$work/python/tokens" || fail "the Python example failed to run"
check_tokens python "$work/python/tokens"

printf 'test-docs: %d passed, %d failed\n' "$passed" "$failed" >&2
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
