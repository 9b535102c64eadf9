#!/usr/bin/env bash
# Runs every test of the repository, one step script after another; stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
for step in scripts/test-*.sh; do
  printf '\n==> %s\n' "$step" >&2
  bash "$step"
done
printf '\nall test steps passed\n' >&2
