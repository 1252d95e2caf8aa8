#!/usr/bin/env bash
# Refresh proto/baseline.binpb, the image `buf breaking` compares against, after a release.
# Deliberate and rare: it prints what changed since the old baseline (all additive, or buf
# would refuse) and overwrites it; commit the new baseline with the release.
# Usage: scripts/refresh_proto_baseline.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=node_modules/.bin/buf
$BUF lint
$BUF breaking --against proto/baseline.binpb
$BUF build --exclude-source-info -o proto/baseline.binpb
echo "proto/baseline.binpb refreshed ($(wc -c < proto/baseline.binpb) bytes); commit it."
