#!/usr/bin/env bash
# Installs Prometheus for tests/deploy/test_ops.py (its integration test starts its own `prometheus` on loopback; without
# the binary that test fails under CI and skips elsewhere). Idempotent: does nothing when `prometheus` is on PATH.
# Debian / Ubuntu only (the distribution's `prometheus` package, which also brings `promtool`).
#
#   scripts/install_prometheus.sh          # as root, or with sudo available
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    echo "prometheus already installed: $(prometheus --version 2>&1 | head -n 1)"
    exit 0
fi
. "$(dirname "$0")/_apt.sh"
apt_install "Prometheus (prometheus + promtool on PATH)" --no-install-recommends prometheus
# The package registers a system service on :9090; the tests run their own instance, so keep that one off.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
echo "installed: $(prometheus --version 2>&1 | head -n 1)"
