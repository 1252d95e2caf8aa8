#!/usr/bin/env bash
# Every contract check that is not pytest (pytest runs tests/contracts/ on its own):
#   buf lint; buf breaking (FILE = append-only) against the committed baseline and, where the
#   git history has them, against HEAD (working tree), HEAD~1 and the main branch; the stale
#   generated-code check; the golden vectors in Node (the browser module) and Go.
# Usage: scripts/test_contracts.sh  (after scripts/setup_contracts.sh, which it re-runs: cheap)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
BUF=node_modules/.bin/buf
scripts/setup_contracts.sh

step() { printf '\n== %s\n' "$*"; }

step "buf lint (STANDARD)"
$BUF lint
echo "ok"

step "buf breaking (FILE) against the committed baseline proto/baseline.binpb"
$BUF breaking --against proto/baseline.binpb
echo "ok"

# Git inputs use subdir=proto, so an older commit without buf.yaml still compares file by file.
against_git() {  # $1 = ref, $2 = what it is
  step "buf breaking (FILE) against $2 ($1)"
  $BUF breaking --against ".git#ref=$1,subdir=proto"
  echo "ok"
}
if [[ -d .git ]] && git rev-parse -q --verify HEAD >/dev/null; then
  head=$(git rev-parse HEAD)
  git cat-file -e HEAD:proto 2>/dev/null && against_git HEAD "the last commit (uncommitted edits)"
  if git cat-file -e HEAD~1:proto 2>/dev/null; then
    against_git HEAD~1 "the previous commit"
  else
    step "buf breaking against HEAD~1: skipped (first commit or shallow clone; the baseline check covers releases)"
  fi
  for main in refs/heads/main refs/remotes/origin/main; do
    if commit=$(git rev-parse -q --verify "$main^{commit}") && [[ $commit != "$head" ]] \
        && git cat-file -e "$commit:proto" 2>/dev/null; then
      against_git "$commit" "main ($main)"
      break
    fi
  done
else
  step "buf breaking against git: skipped (not a git work tree; the baseline check still ran)"
fi

step "generated code up to date (Python, TypeScript, JS, Go, golden vectors)"
PYTHON="$PYTHON" scripts/gen_proto.sh --check

step "golden vectors: Node (ui-static/gen/xy_contracts.js)"
bash scripts/node_test.sh contracts tests/node/contracts.test.mjs

step "golden vectors: Go (contracts/go, offline against Debian's protobuf runtime)"
(cd contracts/go && GOPROXY=off GOFLAGS=-mod=vendor go test ./...)
