#!/usr/bin/env bash
# Debian's Chromium for the web page's browser tests (Playwright drives it through its
# executable path; Playwright's own browser download cannot work on this project's machines).
# Installs it only where it is missing and apt-get can run as root; otherwise says why.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: no chromium, and no root apt-get to install it; the page's tests will skip" >&2
  exit 0
fi
echo "installing Debian's chromium for the browser tests..."
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
