"""Helpers shared by the benchmark scripts: the machine description and RESULTS.md section updates."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("SER_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
NOISE_DIR = Path(os.environ.get("SER_NOISE_DIR", SHARED / "noise"))
"""The noise recordings (training draws and held-out test noises): ``$SER_NOISE_DIR``, else the shared copy."""
RESULTS_MD = HERE / "RESULTS.md"
RESULTS_DIR = HERE / "results"


def machine() -> str:
    """CPU model, core count and, when torch is importable, its version and device."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    desc = f"{cpu}, {os.cpu_count()} cores"
    with contextlib.suppress(ImportError):
        import torch

        desc += f", torch {torch.__version__} ({'cuda' if torch.cuda.is_available() else 'cpu'})"
    return desc


def replace_section(heading: str, section: str, path: Path = RESULTS_MD) -> None:
    """Replace the Markdown section starting with ``heading`` (``## ...``) in ``path``, or append it."""
    text = path.read_text() if path.exists() else "# Benchmark results\n\nEach section is written by its script.\n"
    parts = text.split("\n## ")
    kept = [p for i, p in enumerate(parts) if i == 0 or not ("## " + p).startswith(heading)]
    path.write_text("\n## ".join(kept).rstrip() + "\n\n" + section)
