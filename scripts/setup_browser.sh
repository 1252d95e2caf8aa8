#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests and the end-to-end latency benchmark
# (idempotent; quiet and fast when already installed). Playwright drives this binary through
# `executable_path`; it never downloads a browser of its own.
# Usage: scripts/setup_browser.sh   (root needed only when chromium is missing)
set -euo pipefail

if [[ -x /usr/bin/chromium ]] && dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed"; then
  exit 0
fi
echo "setup_browser: apt-get install chromium"
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null || {
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; }
/usr/bin/chromium --version
