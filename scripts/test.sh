#!/usr/bin/env bash
# The whole test suite: lint, Python tests (unit, real nats-server, real Chromium, real
# Prometheus), contract checks (buf lint/breaking, generated code up to date, Node and Go golden
# vectors), the TypeScript checks (tsc --strict --noEmit over the TypeScript contracts, the
# browser client and the README example). Run through `make test`, which sets everything up first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PWD/node_modules/.bin:$PATH"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

say "ruff"
ruff check xypipe tests bench stages scripts

say "mypy --strict xypipe"
mypy

say "contracts: buf lint, buf breaking, generated code up to date, Node and Go vectors"
bash scripts/test_contracts.sh

say "tsc --strict --noEmit: TypeScript contracts, browser client (checkJs), package declarations, README example"
python scripts/typecheck.py

say "node tests (browser core, worker hub)"
bash scripts/node_test.sh browser tests/node/xy-*.test.mjs

say "pytest"
python -m pytest -q -p no:cacheprovider "$@"
