"""The architecture checks that `make test` runs can fail: import-linter on a copy of the package with a deliberate
violation (the service importing torch, a low layer importing a high one) reports the broken contract, and the
unmodified copy keeps every contract."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (dev extra)")


def _lint(src: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "ser", src / "ser", ignore=shutil.ignore_patterns("__pycache__"))
    return src


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_contracts_hold_on_the_package(package_copy, tmp_path):
    res = _lint(package_copy, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "broken" not in res.stdout.lower().replace("0 broken", "")


def test_torch_in_the_service_breaks_a_contract(package_copy, tmp_path):
    _append(package_copy / "ser" / "serve" / "engine.py", "import torch  # deliberate violation")
    res = _lint(package_copy, tmp_path)
    assert res.returncode != 0
    assert "never import torch" in res.stdout and "ser.serve.engine -> torch" in res.stdout


def test_a_low_layer_importing_a_high_one_breaks_the_layers(package_copy, tmp_path):
    _append(package_copy / "ser" / "features" / "cache.py", "from ser.jobs import train  # deliberate violation")
    res = _lint(package_copy, tmp_path)
    assert res.returncode != 0
    assert "layers follow the data flow" in res.stdout and "ser.features.cache -> ser.jobs.train" in res.stdout
