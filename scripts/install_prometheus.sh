#!/usr/bin/env bash
# Installs Prometheus and Alertmanager's amtool for tests/deploy (test_ops.py starts its own `prometheus` on loopback
# and checks configs with `promtool`; test_alerts.py runs `promtool test rules` and `amtool check-config`; without
# the binaries those tests fail under CI and skip elsewhere). Idempotent: does nothing when `prometheus`, `promtool`
# and `amtool` are on PATH. Debian / Ubuntu only (the distribution's `prometheus` package, which also brings
# `promtool`, and `prometheus-alertmanager`, which brings `amtool`).
#
#   scripts/install_prometheus.sh          # as root, or with sudo available
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1
then
    echo "prometheus already installed: $(prometheus --version 2>&1 | head -n 1)"
    echo "amtool already installed: $(amtool --version 2>&1 | head -n 1)"
    exit 0
fi
. "$(dirname "$0")/_apt.sh"
apt_install "Prometheus and Alertmanager (prometheus, promtool, amtool on PATH)" --no-install-recommends \
    prometheus prometheus-alertmanager
# The packages register system services (:9090, :9093); the tests run their own instances or none, so keep them off.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus prometheus-alertmanager >/dev/null 2>&1 || true
else  # no systemd (a container): the packages' init scripts may have started them, unless policy-rc.d said no
    for svc in prometheus prometheus-alertmanager; do
        if [ -x "/etc/init.d/$svc" ]; then
            $SUDO "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
        fi
    done
fi
echo "installed: $(prometheus --version 2>&1 | head -n 1)"
echo "installed: $(amtool --version 2>&1 | head -n 1)"
