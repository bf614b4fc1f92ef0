"""Times the whole pipeline on the real RAVDESS copy in ../shared/data/ravdess: a first run and a cached re-run.

Usage: ``.venv/bin/python benchmarks/pipeline.py [--config configs/ravdess.yaml] [--workdir benchmarks/runs/pipeline]``.
Resumable: a killed first run continues where it stopped (the stage cache); the per-stage seconds recorded when each
stage ran are summed, and ``resumed`` says whether the first run was interrupted. Writes
``benchmarks/results/pipeline.json`` (``pipeline-<config name>.json`` for a config other than ``ravdess.yaml``) and
that config's section of ``benchmarks/RESULTS.md`` (machine, date).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

from _common import HERE, RESULTS_DIR, machine, replace_section
from ser.pipeline import load_config, run

RESULTS_JSON = RESULTS_DIR / "pipeline.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="time the pipeline on shared RAVDESS (first run + cached re-run)")
    ap.add_argument("--config", type=Path, default=HERE.parent / "configs" / "ravdess.yaml")
    ap.add_argument("--workdir", type=Path, default=HERE / "runs" / "pipeline")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    had_stages = (args.workdir / "stages").is_dir()
    t0 = time.perf_counter()
    first = run(cfg, args.workdir, progress=True)
    first_wall = time.perf_counter() - t0
    if not first.ok:
        print(json.dumps(first.to_dict(), indent=2), file=sys.stderr)
        return 1
    t1 = time.perf_counter()
    again = run(cfg, args.workdir)
    cached_wall = time.perf_counter() - t1
    stages = [
        {"stage": r.name, "seconds": round(float(r.record.get("seconds", 0.0)), 1), "metric": r.metric}
        for r in first.results
    ]
    result = first.to_dict()["result"] or {}
    ev = first.record("evaluate")["evaluation"]
    row = {
        "config": str(args.config),
        "model": cfg.train.model,
        "protocol": ev["protocol"],
        "uar_mean": round(ev["uar"], 4),
        "uar_std": None if ev["uar_std"] is None else round(ev["uar_std"], 4),
        "acc_mean": round(ev["accuracy"], 4),
        "first_run_s": round(sum(s["seconds"] for s in stages), 1),
        "first_run_wall_s": round(first_wall, 1),
        "resumed": had_stages or any(r.status == "cached" for r in first.results),
        "cached_rerun_s": round(cached_wall, 2),
        "all_cached": all(r.status == "cached" for r in again.results),
        "stages": stages,
        "registered": {k: result.get(k) for k in ("name", "version", "alias", "reason")},
        "machine": machine(),
        "date": dt.date.today().isoformat(),
    }
    out = RESULTS_JSON if args.config.name == "ravdess.yaml" else RESULTS_DIR / f"pipeline-{args.config.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    heading = f"## Pipeline (RAVDESS, shared copy, `configs/{args.config.name}`)"
    lines = [
        heading,
        "",
        f"Machine: {row['machine']}. Date: {row['date']}. Produced by `benchmarks/pipeline.py`. Model `{row['model']}`,"
        f" {row['protocol']}: UAR {100 * row['uar_mean']:.1f} %, accuracy {100 * row['acc_mean']:.1f} %.",
        "",
        f"First run {row['first_run_s']:.0f} s (sum of stage times"
        + (", resumed after an interruption" if row["resumed"] else "")
        + f"); cached re-run {row['cached_rerun_s']:.1f} s (every stage cached: {row['all_cached']}).",
        "",
        "| stage | seconds | result |",
        "|---|---|---|",
        *[f"| {s['stage']} | {s['seconds']} | {s['metric']} |" for s in stages],
        "",
    ]
    replace_section(heading, "\n".join(lines))
    print(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
