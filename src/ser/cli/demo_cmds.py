"""``ser demo``: the main job on the embedded default, the synthetic demo corpus.

synth → ingest → validate → speaker-independent splits (leakage-guarded), then a summary. Every artefact lands
under ``--out``; the corpus is labelled synthetic everywhere and never reported as real data.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ser.cli._apps import app, console, print_json


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="output folder"),
    speakers: int = typer.Option(8, "--speakers", help="synthetic speakers"),
    folds: int = typer.Option(4, "--kfold", help="speaker-independent folds"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Run the data layer end to end on a synthetic demo corpus made by code (no downloads).

    Example: ser demo --out out/demo
    """
    from ser.data.synth import synthesize
    from ser.jobs.data import IngestJob, SplitJob, ValidateJob

    progress = not as_json
    corpus = synthesize(out / "corpus", n_speakers=speakers, seed=seed)
    ingest = IngestJob("ravdess", corpus, out / "ingest", workers=2, progress=progress).run()
    ingested = ingest.result
    validated = ValidateJob(ingested.manifest, out / "validated", progress=progress).run().result
    splits = SplitJob(validated.manifest, out / "splits", "kfold", k=folds, seed=seed).run().splits
    summary = {k: v for k, v in ingest.summary.items() if k != "manifest"}
    summary.update(
        validated=len(validated.manifest),
        quarantined=len(ingested.quarantine) + len(validated.quarantine),
        validation_failures=list(validated.failures),
        folds=int(splits["fold"].nunique()),
        leakage_guard="passed",
        outputs={
            "manifest": str(out / "ingest" / "manifest.parquet"),
            "validated": str(out / "validated" / "manifest.parquet"),
            "report": str(out / "validated" / "report.json"),
            "splits": str(out / "splits" / "splits.parquet"),
        },
    )
    if as_json:
        print_json(summary)
        return
    console.print(
        "[bold yellow]SYNTHETIC demo corpus[/] — made by code, not real speech; numbers say nothing about real data."
    )
    table = Table(title="ser demo: corpus → manifest → validated manifest → splits")
    table.add_column("stage")
    table.add_column("result")
    table.add_row("synth", str(corpus))
    table.add_row("ingest", f"{summary['files']} files, {summary['speakers']} speakers, {summary['total_hours']:.3f} h")
    table.add_row("labels", ", ".join(f"{k} {v}" for k, v in summary["labels"].items()))
    table.add_row("validate", f"{summary['validated']} passed, {summary['quarantined']} quarantined")
    table.add_row("split", f"{summary['folds']} speaker-independent folds, leakage guard passed")
    console.print(table)
    for name, path in summary["outputs"].items():
        console.print(f"{name}: {path}")
