#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver for tests/serve/test_browser.py (the browser end-to-end test of the demo
# page; without them that test fails under CI and skips elsewhere). Idempotent: does nothing when `chromium` and
# `chromedriver` are on PATH. Debian / Ubuntu only (the distribution's `chromium` and `chromium-driver` packages).
#
#   scripts/install_browser.sh          # as root, or with sudo available
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "chromium already installed: $(chromium --version 2>/dev/null | head -n 1)"
    exit 0
fi
. "$(dirname "$0")/_apt.sh"
apt_install "Chromium and a matching chromedriver (both on PATH)" chromium chromium-driver
echo "installed: $(chromium --version 2>/dev/null | head -n 1); $(chromedriver --version | head -n 1)"
