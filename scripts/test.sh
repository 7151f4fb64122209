#!/usr/bin/env bash
# Runs all tests of the workspace: installs what they need (scripts/setup.sh),
# then cargo-nextest if it is installed, else cargo test. Extra arguments are
# passed to the test runner, e.g. `scripts/test.sh -p remoteback`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh

# setup.sh installs tansu into cargo's bin dir; the integration tests look it
# up on PATH.
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in
    *":$CARGO_BIN:"*) ;;
    *) export PATH="$CARGO_BIN:$PATH" ;;
esac

if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --workspace "$@"
else
    exec cargo test --workspace "$@"
fi
