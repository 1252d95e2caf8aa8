#!/usr/bin/env bash
# Node's test runner with a short report: a dot per test (every failure in full) on the
# terminal, the whole TAP stream kept in var/test-reports/node-NAME.tap, then one summary line.
# Usage: scripts/node_test.sh NAME TEST_FILE...   (exit status: node's)
set -uo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
mkdir -p var/test-reports
tap="var/test-reports/node-$name.tap"
node --test --test-reporter=dot --test-reporter-destination=stdout \
     --test-reporter=tap --test-reporter-destination="$tap" "$@"
status=$?
# The TAP stream closes with "# tests N", "# pass N", "# fail N", ...: one line of them.
summary=$(grep -E '^# (tests|pass|fail|cancelled|skipped|todo) [0-9]+$' "$tap" \
          | sed 's/^# //' | paste -sd ',' - | sed 's/,/, /g')
echo "node $name: ${summary:-no summary (see $tap)} (full TAP: $tap)"
exit $status
