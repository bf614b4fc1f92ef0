#!/usr/bin/env bash
# Regenerates docker/service.requirements.txt: the service image's dependencies (pyproject.toml's base dependencies
# and `serve` extra, and the build backend from docker/service.requirements.in) pinned with hashes for Python 3.11
# on linux x86_64 (the image's python:3.11-slim). Run it after changing those dependencies and commit the result;
# tests/deploy/test_ops.py checks that the lock pins every package with a hash and covers the extra.
# Needs uv (pip install uv); resolves against PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docker/service.requirements.txt
UV="${UV:-uv}"
{
    echo "# The service image's dependencies, locked with hashes (python 3.11, linux x86_64): pyproject.toml's base"
    echo "# dependencies and serve extra, and the build backend (docker/service.requirements.in)."
    echo "# docker/service.Dockerfile installs them with pip install --require-hashes. Regenerate: scripts/lock_service.sh"
    "$UV" pip compile pyproject.toml docker/service.requirements.in --extra serve --generate-hashes \
        --python-version 3.11 --python-platform x86_64-manylinux_2_28 --index-url https://pypi.org/simple \
        --no-header --quiet
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -c '==' "$out") packages)"
