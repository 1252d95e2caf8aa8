#!/usr/bin/env bash
# Set up everything xypipe needs, idempotently: the Python venv (always), and with --test the
# tools the whole test suite uses (npm packages, Debian's chromium, prometheus, Go toolchain).
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "xypipe needs Python >= 3.11 (found: $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PYTHON" -m venv .venv
fi

# Reinstall only when the dependency declarations change.
stamp=".venv/.xypipe-installed"
digest=$(cat pyproject.toml stages/*/pyproject.toml 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  say "installing xypipe and its pinned dependencies into .venv"
  log=.venv/pip-install.log
  # setuptools' editable builds are chatty; keep their output for when something fails.
  {
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    for plugin in stages/*/; do
      if [ -f "$plugin/pyproject.toml" ]; then
        .venv/bin/python -m pip install --quiet --no-deps -e "$plugin"
      fi
    done
  } >"$log" 2>&1 || { cat "$log" >&2; echo "pip install failed (log above)" >&2; exit 1; }
  echo "$digest" > "$stamp"
fi

if [ "$want_test" = 1 ]; then
  for script in scripts/setup_contracts.sh scripts/setup_browser.sh scripts/setup_prometheus.sh; do
    if [ -f "$script" ]; then bash "$script"; fi
  done
fi
