"""``ser data validate``: checks → validated manifest, quarantine, report (JSON + Markdown with plots)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ser.cli._apps import console, data_app, print_json


@data_app.command("validate")
def validate_cmd(
    manifest: Path = typer.Argument(..., help="manifest.parquet from `ser data ingest`"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    config: Path | None = typer.Option(None, "--config", help="YAML of ValidationConfig thresholds"),
    max_quarantined: float | None = typer.Option(None, "--max-quarantined", help="failure: quarantined fraction"),
    max_imbalance: float | None = typer.Option(None, "--max-imbalance", help="failure: largest/smallest class"),
    min_duration: float | None = typer.Option(None, "--min-duration", help="shortest accepted clip (s)"),
    max_duration: float | None = typer.Option(None, "--max-duration", help="longest accepted clip (s)"),
    workers: int = typer.Option(4, "--workers"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Validate a manifest: decodes, duration, silence, clipping, DC, duplicates, balance. Exits 1 only when a
    failure threshold is crossed.

    Example: ser data validate out/ravdess/manifest.parquet --out out/ravdess/validated
    """
    from ser.jobs.data import ValidateJob

    thresholds = {
        "max_quarantined_fraction": max_quarantined,
        "max_imbalance_ratio": max_imbalance,
        "min_duration_s": min_duration,
        "max_duration_s": max_duration,
    }
    result = ValidateJob(manifest, out, config, thresholds, workers, progress=not as_json).run().result
    r = result.report
    if as_json:
        print_json(r)
    else:
        console.print(f"checked {r['checked']}: {r['passed']} passed, {r['quarantined']} quarantined")
        for reason, n in r["quarantine_reasons"].items():
            console.print(f"  {reason}: {n}")
        for d in r["duplicates"]:
            conflict = " [red]label conflict[/]" if d["label_conflict"] else ""
            console.print(f"duplicate ({d['kind']}){conflict}: " + ", ".join(Path(f).name for f in d["files"]))
        console.print(f"classes: {r['class_counts']} (imbalance {r['imbalance_ratio']})")
        console.print(f"report: {out / 'report.md'}")
    for failure in result.failures:
        print(f"error: threshold crossed: {failure}", file=sys.stderr)
    if result.failures:
        raise typer.Exit(1)
