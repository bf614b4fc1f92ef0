"""``ser train`` and ``ser evaluate``: speaker-independent cross-validation of a model recipe and its report."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from rich.table import Table

from ser.cli._apps import app, console, print_json, require_file
from ser.errors import ConfigError


def _load_run_inputs(manifest_path: Path, splits_path: Path, profile: str):
    import pandas as pd

    from ser.data.labels import apply_profile, get_profile
    from ser.data.schema import read_manifest

    manifest = read_manifest(require_file(manifest_path, "manifest"))
    manifest, dropped = apply_profile(manifest, profile)
    prof = get_profile(profile)
    present = set(manifest["emotion"])
    classes = [c for c in prof.classes if c in present]
    if len(classes) < 2:
        raise ConfigError(f"profile {profile!r} leaves fewer than two classes in the manifest")
    splits = pd.read_parquet(require_file(splits_path, "splits"))
    splits = splits[splits["utt_id"].isin(set(manifest["utt_id"]))]
    return manifest, splits, classes, dropped


def _overrides(config: Path | None) -> dict:
    if config is None:
        return {}
    try:
        data = yaml.safe_load(require_file(config, "config").read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{config}: expected a mapping of recipe fields")
    return data


@app.command("train")
def train(
    manifest: Path = typer.Argument(..., help="manifest.parquet (validated)"),
    splits: Path = typer.Option(..., "--splits", help="splits.parquet from `ser data split`"),
    out: Path = typer.Option(..., "--out", help="run folder (folds, checkpoints, report)"),
    model: str = typer.Option("cnn", "--model", help="recipe: cnn, tdnn, crnn, rnn, classical, cnn+classical"),
    config: Path | None = typer.Option(None, "--config", help="YAML overriding recipe fields (train, params, ...)"),
    profile: str = typer.Option("ravdess8", "--profile", help="label profile (or YAML file)"),
    folds: str | None = typer.Option(None, "--folds", help="comma-separated fold indices (default: all)"),
    cache: Path | None = typer.Option(None, "--cache", help="feature cache folder (default OUT/cache)"),
    workers: int = typer.Option(2, "--workers", help="feature-extraction processes"),
    threads: int = typer.Option(2, "--threads", help="torch CPU threads"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON"),
) -> None:
    """Cross-validate a model recipe speaker-independently, then write the evaluation report.

    Validation speakers for early stopping are carved out of each training fold; the test speakers are seen only
    at the final prediction. A killed run resumes at the first unfinished fold.

    Example: ser train out/m/manifest.parquet --splits out/s/splits.parquet --model cnn --out runs/cnn
    """
    import torch

    from ser.train.cv import cross_validate, ensemble_folds, load_frame_features
    from ser.train.recipes import get_recipe, members
    from ser.train.spec import EnsembleSpec

    torch.set_num_threads(max(1, threads))
    spec = get_recipe(model, _overrides(config))
    frame, split_frame, classes, _ = _load_run_inputs(manifest, splits, profile)
    fold_list = None if folds is None else [int(f) for f in folds.split(",") if f.strip()]
    specs = members([spec])
    kinds = tuple({"logmel"} | {s.features for s in specs})
    feats = load_frame_features(frame, kinds, cache_dir=cache or out / "cache", workers=workers, progress=not as_json)

    def log(name, k, o):
        if not as_json:
            console.print(f"{name} fold {k}: {len(o.y)} test utterances, {o.info.get('seconds')} s")

    outs = {
        s.name: cross_validate(frame, split_frame, s, feats, classes, out, folds=fold_list, seed=seed, log=log)
        for s in specs
    }
    result = (
        ensemble_folds([outs[m] for m in spec.members], spec.weights)
        if isinstance(spec, EnsembleSpec)
        else outs[spec.name]
    )
    _report(result, frame, classes, out / spec.name, spec.name, as_json)


@app.command("evaluate")
def evaluate(
    run: Path = typer.Argument(..., help="run folder written by `ser train`"),
    manifest: Path = typer.Option(..., "--manifest", help="the manifest the run was trained on"),
    model: str = typer.Option("cnn", "--model", help="recipe name inside the run folder"),
    profile: str = typer.Option("ravdess8", "--profile"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recompute the evaluation report of a finished run from its saved fold predictions.

    Example: ser evaluate runs/cnn --manifest out/m/manifest.parquet --model cnn
    """
    from ser.data.labels import apply_profile, get_profile
    from ser.data.schema import read_manifest
    from ser.errors import SerError
    from ser.train.cv import load_fold

    frame, _ = apply_profile(read_manifest(require_file(manifest, "manifest")), profile)
    present = set(frame["emotion"])
    classes = [c for c in get_profile(profile).classes if c in present]
    outs, k = [], 0
    while (o := load_fold(run, model, k)) is not None:
        outs.append(o)
        k += 1
    if not outs:
        raise SerError(f"no saved folds for {model!r} under {run}")
    _report(outs, frame, classes, run / model, model, as_json)


def _report(outputs, frame, classes, out_dir: Path, name: str, as_json: bool) -> None:
    from ser.evaluate.cv_report import cv_evaluation, write_cv_report

    ev = cv_evaluation(outputs, frame, classes)
    write_cv_report(
        out_dir / "report",
        ev,
        title=f"{name}: speaker-independent cross-validation",
        meta={"model": name, "folds": len(outputs), "classes": classes},
    )
    cv = ev["cv"]["metrics"]
    summary = {
        "model": name,
        "folds": len(outputs),
        "uar_mean": cv["uar"]["mean"],
        "uar_std": cv["uar"]["std"],
        "acc_mean": cv["accuracy"]["mean"],
        "acc_std": cv["accuracy"]["std"],
        "pooled": ev["result"]["metrics"],
        "ci": ev["result"]["ci"],
        "report": str(out_dir / "report" / "report.md"),
    }
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"{name}: {len(outputs)} folds, speaker-independent")
    for col in ("fold", "UAR", "accuracy"):
        table.add_column(col)
    for k, (u, a) in enumerate(zip(cv["uar"]["values"], cv["accuracy"]["values"], strict=True)):
        table.add_row(str(k), f"{100 * u:.1f} %", f"{100 * a:.1f} %")
    std = lambda v: 0.0 if v is None else v  # noqa: E731
    table.add_row(
        "mean ± std",
        f"{100 * cv['uar']['mean']:.1f} ± {100 * std(cv['uar']['std']):.1f} %",
        f"{100 * cv['accuracy']['mean']:.1f} ± {100 * std(cv['accuracy']['std']):.1f} %",
    )
    console.print(table)
    console.print(f"report: {summary['report']}")


@app.command("cross-corpus")
def cross_corpus_cmd(
    train_manifest: Path = typer.Argument(..., help="manifest.parquet of the training corpus"),
    test_manifest: Path = typer.Argument(..., help="manifest.parquet of the test corpus"),
    out: Path = typer.Option(..., "--out", help="run folder (predictions, checkpoints, report)"),
    model: str = typer.Option("cnn", "--model", help="recipe: cnn, tdnn, crnn, rnn, classical"),
    config: Path | None = typer.Option(None, "--config", help="YAML overriding recipe fields"),
    profile: str = typer.Option("four", "--profile", help="shared label profile (four, seven, ... or a YAML file)"),
    normalize: str = typer.Option("corpus", "--normalize", help="corpus: standardise features per corpus; none"),
    cache: Path | None = typer.Option(None, "--cache", help="feature cache folder (default OUT/cache)"),
    workers: int = typer.Option(2, "--workers", help="feature-extraction processes"),
    threads: int = typer.Option(2, "--threads", help="torch CPU threads"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON"),
) -> None:
    """Train on one corpus, test on another through a shared label profile (cross-corpus generalisation).

    Example: ser cross-corpus out/ravdess/manifest.parquet out/emodb/manifest.parquet --profile four --out runs/x
    """
    import torch

    from ser.data.schema import read_manifest
    from ser.train.crosscorpus import cross_corpus
    from ser.train.recipes import get_recipe

    torch.set_num_threads(max(1, threads))
    spec = get_recipe(model, _overrides(config))
    res = cross_corpus(
        read_manifest(require_file(train_manifest, "training manifest")),
        read_manifest(require_file(test_manifest, "test manifest")),
        spec,
        profile=profile,
        out_dir=out,
        cache_dir=cache or out / "cache",
        workers=workers,
        seed=seed,
        normalize=normalize,
        progress=not as_json,
    )
    if as_json:
        print_json(res)
        return
    console.print(
        f"{res['model']}: {'+'.join(res['train_corpora'])} → {'+'.join(res['test_corpora'])} ({profile}, "
        f"{len(res['classes'])} classes): UAR {100 * res['uar']:.1f} % (chance {100 * res['chance_uar']:.0f} %), "
        f"accuracy {100 * res['accuracy']:.1f} %"
    )
    console.print(f"report: {res['report']}")
