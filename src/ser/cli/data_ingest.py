"""``ser data ingest``: a corpus folder → ``DIR/manifest.parquet`` (+ ``quarantine.parquet``) and a summary."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ser.cli._apps import console, data_app, print_json


@data_app.command("ingest")
def ingest_cmd(
    path: Path = typer.Argument(..., help="corpus folder (for --corpus csv: the csv manifest)"),
    corpus: str = typer.Option(..., "--corpus", help="ravdess, emodb, cremad, tess, savee, folder, csv, synthetic"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    profile: str = typer.Option("unified", "--profile", help="label profile: unified, ravdess8, seven, four, or YAML"),
    demographics: Path | None = typer.Option(None, "--demographics", help="CREMA-D VideoDemographics.csv"),
    workers: int = typer.Option(4, "--workers", help="threads probing and hashing files"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Turn a corpus folder into a manifest; undecodable or unrecognised files are quarantined with a reason.

    Example: ser data ingest --corpus ravdess ../shared/data/ravdess --out out/ravdess
    """
    from ser.jobs.data import IngestJob

    done = IngestJob(corpus, path, out, profile, demographics, workers, progress=not as_json).run()
    result, summary = done.result, done.summary
    if as_json:
        print_json(summary)
        return
    if result.synthetic:
        console.print("[bold yellow]SYNTHETIC demo corpus[/] — made by code, not real speech.")
    table = Table(title=f"{summary['corpora']}: {summary['files']} files, {summary['speakers']} speakers, "
                  f"{summary['total_hours']:.2f} h")  # fmt: skip
    table.add_column("emotion")
    table.add_column("files", justify="right")
    for label, n in summary["labels"].items():
        table.add_row(label, str(n))
    console.print(table)
    console.print(f"speakers by gender: {summary['speakers_by_gender']}")
    console.print(f"quarantined: {summary['quarantined']}; dropped labels: {summary['dropped'] or 'none'}")
    console.print(f"manifest: {summary['manifest']}")
