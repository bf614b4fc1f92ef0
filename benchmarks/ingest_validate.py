"""Times ``ingest`` + ``validate`` on the real RAVDESS copy in ../shared/data/ravdess.

Usage: ``.venv/bin/python benchmarks/ingest_validate.py [--workers 2] [--repeats 1]``.
Writes ``benchmarks/results/ingest_validate.json`` and the matching section of ``benchmarks/RESULTS.md``,
with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

from _common import RESULTS_DIR, SHARED, machine, replace_section
from ser.data.ingest import ingest
from ser.data.validate import validate

RAVDESS = Path(os.environ.get("SER_RAVDESS", SHARED / "ravdess"))
RESULTS_JSON = RESULTS_DIR / "ingest_validate.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="time ingest + validate on shared RAVDESS")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)
    runs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ing = ingest("ravdess", RAVDESS, workers=args.workers)
        t1 = time.perf_counter()
        val = validate(ing.manifest, workers=args.workers)
        t2 = time.perf_counter()
        runs.append({"ingest_s": round(t1 - t0, 2), "validate_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2)})
    best = min(runs, key=lambda r: r["total_s"])
    hours = float(ing.manifest["duration_s"].sum()) / 3600
    row = {
        "corpus": "ravdess (shared, 16 kHz FLAC)",
        "files": len(ing.manifest),
        "audio_hours": round(hours, 3),
        "validated": len(val.manifest),
        "quarantined": len(ing.quarantine) + len(val.quarantine),
        "workers": args.workers,
        **best,
        "files_per_s": round(len(ing.manifest) / best["total_s"], 1),
        "runs": runs,
        "machine": machine(),
        "date": dt.date.today().isoformat(),
    }
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(row, indent=2) + "\n")
    section = (
        "## Ingest + validate (RAVDESS, shared copy)\n\n"
        f"Machine: {row['machine']}. Date: {row['date']}. Produced by `benchmarks/ingest_validate.py` "
        f"({args.workers} workers, best of {args.repeats}).\n\n"
        "| files | audio h | ingest s | validate s | total s | files / s | quarantined |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {row['files']} | {row['audio_hours']} | {row['ingest_s']} | {row['validate_s']} | {row['total_s']} | "
        f"{row['files_per_s']} | {row['quarantined']} |\n"
    )
    replace_section("## Ingest + validate", section)
    print(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
