"""``ser pipeline run``: corpus → validated manifest → splits → features → (tune) → train → evaluate → export →
model card → registry, with a cache per stage."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ser.cli._apps import app, console, print_json
from ser.errors import SerError

pipeline_app = typer.Typer(help="The training pipeline (local DAG runner; the same stages run in Airflow).")
app.add_typer(pipeline_app, name="pipeline", no_args_is_help=True)


def _workdir(workdir: Path | None) -> Path:
    from ser.registry import default_workdir

    return workdir or default_workdir()


@pipeline_app.command("run")
def run_cmd(
    config: Path | None = typer.Option(None, "--config", help="pipeline YAML (default: the synthetic demo corpus)"),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="where stages, registry and MLflow live [$SER_WORKDIR or ./runs]"
    ),
    only: str | None = typer.Option(None, "--only", help="comma-separated stages to run (their upstream must be done)"),
    force: str | None = typer.Option(None, "--force", help="comma-separated stages to re-run even if cached"),
    as_json: bool = typer.Option(False, "--json", help="print the final summary as JSON"),
) -> None:
    """Run the pipeline; a re-run with nothing changed is read from the stage cache, a killed run resumes.

    With $AIP_MODEL_DIR set (a Vertex AI custom training job, or a Cloud Run job given it), the registered model
    folder is also copied there (a path or URI: gs://, ...).

    Example: ser pipeline run --config pipeline.yaml --workdir runs
    """
    import os

    from ser.pipeline import MODEL_DIR_VARIABLE, copy_model_folder, load_config, run

    cfg = load_config(config)
    wd = _workdir(workdir)
    status = None

    def on_stage(name: str, phase: str) -> None:
        nonlocal status
        if as_json:
            return
        if phase == "start":
            status = console.status(f"[bold]{name}[/] …")
            status.start()
        elif status is not None:
            status.stop()

    if not as_json and cfg.data.synthetic:
        console.print(
            "[bold yellow]SYNTHETIC demo corpus[/] — made by code, not speech; its numbers say nothing about real data."
        )
    summary = run(
        cfg,
        wd,
        only=[s for s in only.split(",") if s] if only else None,
        force=[s for s in force.split(",") if s] if force else (),
        progress=not as_json,
        on_stage=on_stage,
    )
    data = summary.to_dict()
    model_dir_uri = os.environ.get(MODEL_DIR_VARIABLE, "").strip()
    if model_dir_uri and summary.ok and data.get("result"):
        data["copied_to"] = copy_model_folder(summary, model_dir_uri)
    if as_json:
        print_json(data)
    else:
        table = Table(title=f"ser pipeline: {wd}")
        for col in ("stage", "status", "seconds", "result"):
            table.add_column(col)
        colour = {"ran": "green", "cached": "cyan", "failed": "red"}
        for r in summary.results:
            table.add_row(r.name, f"[{colour[r.status]}]{r.status}[/]", f"{r.seconds:.1f}", r.error or r.metric)
        console.print(table)
        res = data.get("result")
        if res:
            console.print(f"model {res['name']} v{res['version']} → [bold]{res['alias']}[/] ({res['reason']})")
            console.print(f"model folder: {res['model_dir']}")
        if data.get("copied_to"):
            console.print(f"copied to ${MODEL_DIR_VARIABLE}: {data['copied_to']}", highlight=False)
        console.print(f"total {summary.seconds:.1f} s; log: {wd / 'logs' / 'pipeline.jsonl'}")
    if not summary.ok:
        raise typer.Exit(1)


@pipeline_app.command("pretrained")
def pretrained_cmd(
    config: Path = typer.Option(Path("configs/ravdess-all.yaml"), "--config", help="pipeline YAML of the bundle"),
    workdir: Path = typer.Option(Path("runs/pretrained"), "--workdir", help="the pipeline's workdir (its cache)"),
    dest: Path | None = typer.Option(None, "--dest", help="bundled folder to replace (default: the package's)"),
    allow_dirty: bool = typer.Option(
        False, "--allow-dirty", help="build from a tree with uncommitted changes (the card then names <commit>+dirty)"
    ),
) -> None:
    """Rebuild the bundled pretrained model: the pipeline on CONFIG (recipe, data and protocol from there), then
    the folder it registered copied into the package with the run record's stage keys and metrics
    (metadata.json "pretrained"). A second run reads the same run record: the same metrics (not the same bytes).

    Example: ser pipeline pretrained --config configs/ravdess-all.yaml --workdir runs/pretrained   (make pretrained)
    """
    from ser.export import code_version
    from ser.model_folder import read_metadata
    from ser.pipeline import load_config, run
    from ser.pretrained import bundle, bundled_dir

    version = code_version()
    if version.endswith("+dirty") and not allow_dirty:
        # checked before an hour of training: the bundle's card and metadata record the code version it was built
        # from, and "+dirty" names no commit anyone can check out to rebuild it
        raise SerError(
            f"the source tree has uncommitted changes ({version}): commit them first, so the bundled model's card "
            "names the commit it was built from, or pass --allow-dirty"
        )
    cfg = load_config(config)
    summary = run(cfg, workdir, progress=True)
    if not summary.ok:
        failed = next(r for r in summary.results if r.status == "failed")
        raise SerError(f"pipeline stage {failed.name} failed: {failed.error}")
    registered = summary.record("register")["result"]
    built_from = read_metadata(registered["model_dir"]).get("code_version", "")
    if built_from.endswith("+dirty") and not allow_dirty:
        # the stages' cache keys leave the code version out, so a clean tree can still read back a model exported
        # from a dirty one: what ships is what the export recorded
        raise SerError(
            f"the registered model was exported from a tree with uncommitted changes ({built_from}): rebuild it in "
            "a fresh workdir (--workdir), or pass --allow-dirty"
        )
    evaluation = summary.record("evaluate")["evaluation"]
    cal = evaluation.get("calibration") or {}
    provenance = {
        "config": str(config),
        "recipe": cfg.train.model,
        "overrides": cfg.train.overrides,
        "data": {"corpus": cfg.data.corpus, "profile": cfg.data.profile},
        "run": {
            "workdir": str(workdir),
            "stage_keys": {r.name: r.key for r in summary.results},
            "registered": {k: registered[k] for k in ("name", "version", "alias")},
        },
        "metrics": {
            "protocol": evaluation["protocol"],
            "uar": evaluation["uar"],
            "accuracy": evaluation["accuracy"],
            "uar_per_fold": evaluation["uar_per_fold"],
            "temperature": cal.get("temperature"),
            "ece": cal.get("ece_before"),
            "ece_calibrated": cal.get("ece_after"),
        },
        "rebuild": "make pretrained",
    }
    out = bundle(registered["model_dir"], dest or bundled_dir(), provenance)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    console.print(
        f"bundled {registered['name']} v{registered['version']} → {out} ({size / 1e6:.1f} MB): "
        f"UAR {100 * evaluation['uar']:.1f} % ({evaluation['protocol']})",
        highlight=False,
    )


@pipeline_app.command("stages")
def stages_cmd() -> None:
    """List the stages in order with their dependencies.

    Example: ser pipeline stages
    """
    from ser.pipeline.stages import STAGES

    for s in STAGES:
        console.print(f"{s.name:<9} ← {', '.join(s.deps) or '-'}")
