"""``ser model``: the registry — list, show, promote, rollback, evaluate a version on a labelled manifest, and
adapt a model folder to a deployment from unlabelled audio."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ser.cli._apps import app, console, print_json

model_app = typer.Typer(help="Registered models and their champion / challenger aliases.")
app.add_typer(model_app, name="model", no_args_is_help=True)

WORKDIR = typer.Option(None, "--workdir", help="pipeline workdir [$SER_WORKDIR or ./runs]")


def _wd(workdir: Path | None) -> Path:
    from ser.registry import default_workdir

    return workdir or default_workdir()


def _mirror(workdir: Path, name: str, alias: str, version: int | None) -> None:
    """Mirror an alias change into the workdir's MLflow store, when it has one."""
    from ser.tracking import open_tracker

    tracker = open_tracker(workdir)
    if tracker is not None:
        tracker.set_alias(name, alias, version)


@model_app.command("list")
def list_cmd(workdir: Path | None = WORKDIR, as_json: bool = typer.Option(False, "--json")) -> None:
    """List registered versions with their aliases and UAR.

    Example: ser model list --workdir runs
    """
    from ser.registry import list_versions

    rows = list_versions(_wd(workdir))
    if as_json:
        print_json([r.to_dict() for r in rows])
        return
    table = Table(title=f"registry: {_wd(workdir) / 'registry'}")
    for col in ("name", "version", "aliases", "UAR", "model", "registered"):
        table.add_column(col)
    for r in rows:
        uar = "-" if r.uar is None else f"{100 * r.uar:.1f} %"
        table.add_row(r.name, str(r.version), ", ".join(r.aliases), uar, r.model, r.registered)
    console.print(table if rows else "no registered models")


@model_app.command("show")
def show_cmd(
    ref: str = typer.Argument("champion", help="NAME[@ALIAS|/VERSION], ALIAS or VERSION"),
    workdir: Path | None = WORKDIR,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show a registered model's metadata (folder, aliases, evaluation, training data).

    Example: ser model show ser-emotion@champion
    """
    from ser.registry import show

    info = show(_wd(workdir), ref)
    if as_json:
        print_json(info)
        return
    ev = info.get("evaluation") or {}
    console.print(f"[bold]{info.get('name')}[/] v{info.get('version')}  aliases: {', '.join(info['aliases']) or '-'}")
    console.print(f"folder: {info['path']}")
    console.print(f"model: {info.get('model', {}).get('name')}  labels: {', '.join(info.get('labels', []))}")
    if ev:
        console.print(f"UAR {100 * ev['uar']:.1f} % — {ev.get('protocol')}")
    if info.get("decision"):
        console.print(f"decision: {info['decision'].get('alias')} — {info['decision'].get('reason')}")


@model_app.command("promote")
def promote_cmd(
    ref: str = typer.Argument(..., help="NAME/VERSION, VERSION or NAME@challenger"),
    workdir: Path | None = WORKDIR,
    reason: str = typer.Option("promoted by hand", "--reason"),
) -> None:
    """Make a registered version the champion (the old champion can be restored with rollback).

    Example: ser model promote ser-emotion/3 --reason "reviewed on fresh calls"
    """
    from ser.registry import read_aliases, resolve, set_alias

    wd = _wd(workdir)
    path = resolve(wd, ref)
    name, version = path.parent.name, int(path.name)
    set_alias(wd, name, "champion", version, reason)
    if read_aliases(wd, name).get("challenger") == version:
        set_alias(wd, name, "challenger", None, f"v{version} promoted")
        _mirror(wd, name, "challenger", None)
    _mirror(wd, name, "champion", version)
    console.print(f"{name} v{version} is now champion")


@model_app.command("rollback")
def rollback_cmd(
    name: str = typer.Argument("ser-emotion", help="registered model name"),
    workdir: Path | None = WORKDIR,
) -> None:
    """Point champion back at the version that held it before.

    Example: ser model rollback ser-emotion
    """
    from ser.errors import SerError
    from ser.registry import previous_champion, read_aliases, set_alias

    wd = _wd(workdir)
    prev = previous_champion(wd, name)
    if prev is None:
        raise SerError(f"{name}: no earlier champion to roll back to")
    current = read_aliases(wd, name).get("champion")
    set_alias(wd, name, "champion", prev, f"rollback from v{current}")
    _mirror(wd, name, "champion", prev)
    console.print(f"{name}: champion v{current} → v{prev}")


@model_app.command("evaluate")
def evaluate_cmd(
    ref: str = typer.Argument(..., help="NAME@ALIAS, NAME/VERSION, ALIAS, VERSION or a model folder"),
    manifest: Path = typer.Option(
        ..., "--manifest", help="labelled manifest: manifest.parquet or a CSV (path,label[,speaker,gender])"
    ),
    out: Path = typer.Option(..., "--out", help="report folder"),
    workdir: Path | None = WORKDIR,
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="speaker-bootstrap resamples for the 95 % CIs (0: none)"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Score a registered model with onnxruntime (the served path) on a labelled manifest: the training report
    (UAR with speaker-bootstrap CIs, per class, per group, confusion matrix and reliability plots).

    Example: ser model evaluate ser-emotion@champion --manifest new/manifest.parquet --out reports/champion
    """
    from ser.jobs.evaluate import ModelEvaluateJob
    from ser.registry import resolve

    folder = Path(ref) if Path(ref).is_dir() else resolve(_wd(workdir), ref)
    res = ModelEvaluateJob(folder, manifest, out, n_boot=n_boot, seed=seed, progress=not as_json).run()
    summary = res.summary()
    if as_json:
        print_json(summary)
        return
    ci = summary["ci"] or {}
    interval = f" (95 % CI {100 * ci['uar']['low']:.1f} – {100 * ci['uar']['high']:.1f})" if ci.get("uar") else ""
    console.print(
        f"{folder}: UAR {100 * summary['uar']:.1f} %{interval}, accuracy {100 * summary['accuracy']:.1f} % "
        f"on {summary['n']} utterances, {summary['speakers']} speakers"
    )
    console.print(f"report: {summary['report']}")


@model_app.command("adapt")
def adapt_cmd(
    ref: str = typer.Argument(..., help="a model folder, or NAME@ALIAS / NAME/VERSION in the workdir's registry"),
    audio: Path = typer.Option(..., "--audio", help="folder (searched recursively) or file of unlabelled target audio"),
    out: Path = typer.Option(..., "--out", help="the adapted model folder to write (a new folder)"),
    target: str | None = typer.Option(None, "--target", help="the deployment's name in the card [audio folder name]"),
    source_audio: Path | None = typer.Option(
        None, "--source-audio", help="training-domain audio, for a folder without reference.parquet"
    ),
    max_files: int | None = typer.Option(None, "--max-files", min=1, help="a seeded sample of at most N files"),
    workers: int = typer.Option(1, "--workers", min=1, help="processes for the feature extraction"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out folder"),
    workdir: Path | None = WORKDIR,
    as_json: bool = typer.Option(False, "--json", help="print the outcome as JSON"),
    method: str = typer.Option(
        "auto",
        "--method",
        help="rows (map the input rows), batchnorm (AdaBN: re-estimate the graph's batch norms), or auto: "
        "batchnorm for a graph with batch norms whose input is normalised per utterance, else rows",
    ),
) -> None:
    """Adapt a model to a deployment without labels, writing an adapted copy of the folder. Files that cannot be
    used are skipped and listed with their reason.

    rows: estimate the mean and deviation of each log-mel input row over the target audio (through the model's own
    preprocessing) and map them onto the training statistics (from its reference.parquet) before the model. A model
    that standardises each clip's rows itself (input_norm utterance: the cnn, crnn and rnn recipes) is invariant to
    this map. batchnorm (AdaBN): re-estimate every batch-norm layer's mean and variance on the target audio, layer
    after layer, inside the graph; acts on those models too, if their graph kept its batch norms (exported by this
    version; the bundled model's are folded into its convolutions).

    Example: ser model adapt runs/registry/ser-emotion/3 --audio calls/ --out models/ser-emotion-callcentre
    """
    from ser.jobs.adapt import AdaptJob

    res = AdaptJob(
        ref,
        audio,
        out,
        target=target,
        source_audio=source_audio,
        max_files=max_files,
        workers=workers,
        overwrite=overwrite,
        workdir=_wd(workdir),
        method=method,
    ).run()
    if as_json:
        print_json(res.to_dict())
        return
    if res.method == "batchnorm":
        mean_shift = sum(la["mean_shift_sd"] for la in res.layers) / len(res.layers)
        console.print(
            f"{res.path}: adapted to {res.target!r} from {res.files} file(s), {res.seconds:.1f} s of audio "
            f"(AdaBN: {len(res.layers)} batch-norm layers re-estimated; layer means moved by {mean_shift:.2f} "
            "training deviations on average)"
        )
    else:
        rows = res.rows or (0, 0)
        console.print(
            f"{res.path}: adapted to {res.target!r} from {res.files} file(s), {res.seconds:.1f} s of audio "
            f"(rows {rows[0]}–{rows[1] - 1}; training statistics: {res.source}); "
            f"mean row offset {res.shift_db:.2f} dB"
        )
    if res.invariant:
        console.print(
            "[yellow]note: this model standardises each clip's input rows itself (input_norm utterance), so the "
            "adaptation cancels out: the new folder answers exactly as the original. --method batchnorm (AdaBN) "
            "acts on such a model when its graph kept its batch norms (exported by this version of ser).[/]"
        )
    if res.skipped:
        console.print(f"[yellow]skipped {len(res.skipped)} file(s):[/]")
        for path, reason in res.skipped[:10]:
            console.print(f"  {path}: {reason}")
        if len(res.skipped) > 10:
            console.print(f"  ... {len(res.skipped) - 10} more (all listed in {res.path}/adaptation.json)")
