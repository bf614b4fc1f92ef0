"""``ser data split``: speaker-independent folds → ``DIR/splits.parquet`` (leakage-guarded)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ser.cli._apps import console, data_app, print_json
from ser.errors import SerError


@data_app.command("split")
def split_cmd(
    manifest: Path = typer.Argument(..., help="manifest.parquet"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    preset: str | None = typer.Option(None, "--preset", help="named preset: ravdess6"),
    kfold: int | None = typer.Option(None, "--kfold", help="speaker-grouped, label-stratified k-fold"),
    loso: bool = typer.Option(False, "--loso", help="leave one speaker out"),
    holdout: str | None = typer.Option(None, "--holdout", help="comma-separated test speakers"),
    holdout_fraction: float | None = typer.Option(None, "--holdout-fraction", help="share of speakers held out"),
    val_speakers: int = typer.Option(0, "--val-speakers", help="validation speakers carved from each train fold"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Make speaker-independent splits; no speaker or content hash ever sits on two sides of a fold.

    Example: ser data split out/ravdess/manifest.parquet --preset ravdess6 --out out/ravdess/splits
    """
    from ser.jobs.data import SplitJob

    chosen = [
        name
        for name, given in (
            ("preset", preset),
            ("kfold", kfold),
            ("loso", loso or None),
            ("holdout", holdout),
            ("holdout-fraction", holdout_fraction),
        )
        if given is not None
    ]
    if len(chosen) != 1:
        raise SerError("give exactly one of --preset, --kfold, --loso, --holdout, --holdout-fraction")
    if preset is not None and preset != "ravdess6":
        raise SerError(f"unknown preset {preset!r}; known: ravdess6")
    method = {"preset": "ravdess6", "kfold": "kfold", "loso": "loso"}.get(chosen[0], "holdout")
    done = SplitJob(
        manifest,
        out,
        method,
        k=kfold or 5,
        seed=seed,
        test_speakers=[s.strip() for s in holdout.split(",")] if holdout else None,
        test_fraction=holdout_fraction or 0.2,
        val_speakers=val_speakers,
    ).run()
    splits, per_fold = done.splits, done.per_fold()
    if as_json:
        print_json({
            "method": method,
            "folds": int(splits["fold"].nunique()),
            "per_fold": [{"fold": int(f), "role": r, **{k: int(v) for k, v in row.items()}}
                         for (f, r), row in per_fold.iterrows()],
            "splits": str(out / "splits.parquet"),
        })  # fmt: skip
        return
    table = Table(title=f"{method}: {splits['fold'].nunique()} folds (leakage guard passed)")
    for col in ("fold", "role", "speakers", "utterances"):
        table.add_column(col)
    for (f, r), row in per_fold.iterrows():
        table.add_row(str(f), r, str(row["speakers"]), str(row["utterances"]))
    console.print(table)
    console.print(f"splits: {out / 'splits.parquet'}")
