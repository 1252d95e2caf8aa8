#!/usr/bin/env bash
# Install Debian's Prometheus for tests/test_prometheus_scrape.py and tests/test_ops_prometheus.py
# (idempotent; quiet and fast when already installed): `prometheus` itself, run by the tests on a
# random port with a generated config, and `promtool` (same package), which checks and unit-tests
# infra/prometheus/. The Debian service is stopped and disabled so it does not hold port 9090.
# Usage: scripts/setup_prometheus.sh   (root needed only when prometheus is missing)
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null && dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q "install ok installed"; then
  exit 0
fi
echo "setup_prometheus: apt-get install prometheus"
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101: packages must not start their daemons here (containers have no init; CI
# machines must not get a resident Prometheus on 9090).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=1
fi
trap '[[ $created_policy == 1 ]] && $SUDO rm -f "$policy"' EXIT
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null || {
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
prometheus --version 2>&1 | head -1
command -v promtool >/dev/null || { echo "setup_prometheus: promtool missing after installing prometheus" >&2; exit 1; }
