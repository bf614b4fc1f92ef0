"""``ser tune``: Optuna hyper-parameter search on validation speakers carved out of one training fold."""

from __future__ import annotations

from pathlib import Path

import typer

from ser.cli._apps import app, console, print_json, recipe_overrides, require_file
from ser.cli._executor_opts import EXECUTOR_HELP, RAY_ADDRESS_HELP, THREADS_HELP, make_executor


@app.command("tune")
def tune_cmd(
    manifest: Path = typer.Argument(..., help="manifest.parquet (validated)"),
    splits: Path = typer.Option(..., "--splits", help="splits.parquet from `ser data split`"),
    space: Path = typer.Option(..., "--space", help="search-space YAML: dotted recipe fields → ranges / choices"),
    model: str = typer.Option("cnn", "--model", help="recipe: cnn, tdnn, crnn, rnn, classical"),
    trials: int | None = typer.Option(None, "--trials", help="finished trials the study should hold (grid: all)"),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe, random or grid"),
    pruner: str = typer.Option("median", "--pruner", help="median, halving or none (torch recipes)"),
    fold: int = typer.Option(0, "--fold", help="fold whose training speakers are tuned on"),
    out: Path | None = typer.Option(None, "--out", help="output folder (default runs/tune/STUDY)"),
    storage: Path | None = typer.Option(None, "--storage", help="SQLite file of the study (default OUT/study.db)"),
    study: str | None = typer.Option(None, "--study", help="study name (default MODEL-foldK)"),
    config: Path | None = typer.Option(None, "--config", help="YAML overriding recipe fields before tuning"),
    profile: str = typer.Option("ravdess8", "--profile", help="label profile (or YAML file)"),
    val_speakers: int | None = typer.Option(None, "--val-speakers", help="validation speakers (default: recipe's)"),
    timeout: float | None = typer.Option(None, "--timeout", help="stop starting trials after this many seconds"),
    cache: Path | None = typer.Option(None, "--cache", help="feature cache folder (default OUT/cache)"),
    workers: int = typer.Option(2, "--workers", help="feature-extraction processes"),
    threads: int = typer.Option(2, "--threads", help=THREADS_HELP),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: str = typer.Option("local", "--ray-address", help=RAY_ADDRESS_HELP),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON, no progress"),
) -> None:
    """Tune a recipe's hyper-parameters with Optuna by validation UAR on speakers carved out of one training fold.

    The test speakers of the fold are never loaded. The study lives in a SQLite file: run the same command again
    to resume it (only the missing trials run); with --executor ray the trials run in parallel as Ray tasks
    against that file. Writes best_params.json, best_config.yaml (for `ser train --config`), trials.csv and
    optimization_history.png to OUT.

    Example: ser tune out/m/manifest.parquet --splits out/s/splits.parquet --model cnn --space space.yaml --trials 30
    """
    import torch

    from ser.errors import ConfigError
    from ser.jobs.train import FeatureSource, load_run_inputs
    from ser.jobs.tune import TuneJob, TuneSettings
    from ser.train.recipes import get_recipe
    from ser.train.tune_space import PRUNERS, SAMPLERS, load_space

    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if pruner not in PRUNERS:
        raise ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    if sampler != "grid" and trials is None:
        raise ConfigError("--trials is required unless --sampler grid")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    settings = TuneSettings(
        get_recipe(model, recipe_overrides(config)),
        load_space(space),
        trials,
        sampler,
        pruner,
        fold,
        storage,
        study,
        val_speakers,
        seed,
        timeout,
    )
    settings.check()  # fail on bad arguments before any feature extraction
    ex = make_executor(executor, ray_address, threads)
    out = out or Path("runs") / "tune" / settings.name
    torch.set_num_threads(max(1, threads))
    frame, split_frame, classes, _ = load_run_inputs(
        require_file(manifest, "manifest"), require_file(splits, "splits"), profile
    )
    features = FeatureSource(cache or out / "cache", workers=workers, progress=not as_json, executor=ex)
    job = TuneJob(frame, split_frame, classes, out, features, settings, ex)

    def log(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    done = job.run(log=None if as_json else log, on_start=None if as_json else log)
    result = done.result
    paths = done.outputs
    summary = {**result.summary(), "outputs": {k: str(v) for k, v in paths.items()}}
    if as_json:
        print_json(summary)
        return
    if result.best_value is None:
        console.print(f"no trial completed ({result.n_pruned} pruned, {result.n_failed} failed)")
    else:
        console.print(f"best {result.best_value:.3f} validation UAR (trial #{result.best_trial}):", markup=False)
        for key, value in (result.best_params or {}).items():
            console.print(f"  {key} = {value}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"trials: {result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} failed "
        f"({result.n_new} run now); outputs in {out}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
