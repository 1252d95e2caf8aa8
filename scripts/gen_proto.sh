#!/usr/bin/env bash
# Regenerate every language's contract code from proto/ (make proto / xypipe dev proto), or with
# --check fail if the committed generated code is stale. See scripts/gen_proto.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[[ -x $PYTHON ]] || PYTHON=python3
exec "$PYTHON" scripts/gen_proto.py "$@"
