"""``ser tune``: Optuna hyper-parameter search on validation speakers carved out of one training fold."""

from __future__ import annotations

from pathlib import Path

import typer

from ser.cli._apps import app, console, print_json
from ser.cli.train_cmds import _load_run_inputs, _overrides


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
    threads: int = typer.Option(2, "--threads", help="torch CPU threads"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON, no progress"),
) -> None:
    """Tune a recipe's hyper-parameters with Optuna by validation UAR on speakers carved out of one training fold.

    The test speakers of the fold are never loaded. The study lives in a SQLite file: run the same command again
    to resume it (only the missing trials run). Writes best_params.json, best_config.yaml (for `ser train
    --config`), trials.csv and optimization_history.png to OUT.

    Example: ser tune out/m/manifest.parquet --splits out/s/splits.parquet --model cnn --space space.yaml --trials 30
    """
    import torch

    from ser.errors import ConfigError
    from ser.train.cv import load_frame_features
    from ser.train.recipes import get_recipe
    from ser.train.spec import ModelSpec
    from ser.train.tune import tune, write_outputs
    from ser.train.tune_objective import tuning_roles, tuning_val_speakers
    from ser.train.tune_space import PRUNERS, SAMPLERS, grid_space, load_space, parse_space

    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if pruner not in PRUNERS:
        raise ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    spec = get_recipe(model, _overrides(config))
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"--model {model} is an ensemble; tune its member recipes one at a time")
    space_map = load_space(space)
    params = parse_space(space_map, spec)  # fail on bad arguments before any feature extraction
    if sampler == "grid":
        grid_space(params)
    elif trials is None:
        raise ConfigError("--trials is required unless --sampler grid")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    study_name = study or f"{spec.name}-fold{fold}"
    out = out or Path("runs") / "tune" / study_name
    storage = storage or out / "study.db"
    torch.set_num_threads(max(1, threads))

    frame, split_frame, classes, _ = _load_run_inputs(manifest, splits, profile)
    n_val = tuning_val_speakers(spec, val_speakers)
    roles = tuning_roles(frame, split_frame, fold, n_val, seed)
    seen = frame[frame["utt_id"].isin(set(roles["train"]["utt_id"]) | set(roles["val"]["utt_id"]))]
    kinds = tuple({"logmel", spec.features})
    feats = load_frame_features(seen, kinds, cache_dir=cache or out / "cache", workers=workers, progress=not as_json)

    def log(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    if not as_json:
        console.print(
            f"tuning {spec.name} on fold {fold}: {roles['train']['speaker'].nunique()} training speakers, "
            f"validation speakers {', '.join(sorted(map(str, roles['val']['speaker'].unique())))}; "
            f"study {study_name!r} in {storage}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    result = tune(
        frame,
        split_frame,
        spec,
        feats,
        classes,
        fold=fold,
        space=space_map,
        n_trials=trials,
        sampler=sampler,
        pruner=pruner,
        storage=storage,
        study_name=study_name,
        val_speakers=n_val,
        seed=seed,
        timeout=timeout,
        log=None if as_json else log,
    )
    paths = write_outputs(result, out)
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
