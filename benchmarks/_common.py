"""Helpers shared by the benchmark scripts: the machine description and RESULTS.md section updates."""

from __future__ import annotations

import contextlib
import os
import platform
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("SER_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
NOISE_DIR = Path(os.environ.get("SER_NOISE_DIR", SHARED / "noise"))
"""The noise recordings (training draws and held-out test noises): ``$SER_NOISE_DIR``, else the shared copy."""
RESULTS_MD = HERE / "RESULTS.md"
RESULTS_DIR = HERE / "results"


def screen_name(name: str) -> str:
    """A screen's name (``--screen NAME``): a comparison of candidates kept in its own results file and RESULTS.md
    section beside the figures of record, so lower-case letters, digits and dashes only."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise SystemExit(f"screen name {name!r}: use lower-case letters, digits and dashes")
    return name


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
    """Write ``section`` (Markdown starting with its ``## ...`` heading line) into ``path`` where it stands, so a
    rerun leaves the file's order, and its diff, alone: in place of the section with the same heading line (and of
    any later copy of it); failing that, of the one section whose heading starts with ``heading`` (a script's
    heading reworded); else appended. No other section is touched, even one whose heading ``heading`` is a prefix of
    (``## Monitoring`` and ``## Monitoring in the service: ...`` are two scripts' sections)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n\nEach section is written by its script.\n"
    parts = text.split("\n## ")
    titles = [("## " + p).splitlines()[0] if i > 0 else None for i, p in enumerate(parts)]
    at = [i for i, t in enumerate(titles) if t == section.strip().splitlines()[0]]
    if not at:
        at = [i for i, t in enumerate(titles) if t is not None and t.startswith(heading)][:2]
        if len(at) != 1:
            path.write_text(text.rstrip() + "\n\n" + section)
            return
    parts[at[0]] = section.strip().removeprefix("## ") + "\n"
    kept = [p for i, p in enumerate(parts) if i not in at[1:]]
    path.write_text("\n## ".join(kept).rstrip() + "\n")
