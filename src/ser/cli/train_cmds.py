"""``ser train`` and ``ser evaluate``: speaker-independent cross-validation of a model recipe and its report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ser.cli._apps import app, console, print_json, recipe_overrides, require_file
from ser.cli._executor_opts import EXECUTOR_HELP, RAY_ADDRESS_HELP, THREADS_HELP, make_executor


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
    threads: int = typer.Option(2, "--threads", help=THREADS_HELP),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: str = typer.Option("local", "--ray-address", help=RAY_ADDRESS_HELP),
    seed: int = typer.Option(0, "--seed"),
    noise_dir: Path | None = typer.Option(
        None, "--noise-dir", help="noise recordings for a robust recipe's variants (default $SER_NOISE_DIR)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON"),
) -> None:
    """Cross-validate a model recipe speaker-independently, then write the evaluation report.

    Validation speakers for early stopping are carved out of each training fold; the test speakers are seen only
    at the final prediction. A killed run resumes at the first unfinished fold. With --executor ray the folds
    (and an ensemble's members) train side by side as Ray tasks, with the same results.

    Example: ser train out/m/manifest.parquet --splits out/s/splits.parquet --model cnn --out runs/cnn
    """
    import torch

    from ser.jobs.train import CrossValidateJob, FeatureSource, load_run_inputs
    from ser.train.recipes import get_recipe

    ex = make_executor(executor, ray_address, threads)
    torch.set_num_threads(max(1, threads))
    spec = get_recipe(model, recipe_overrides(config))
    frame, split_frame, classes, _ = load_run_inputs(
        require_file(manifest, "manifest"), require_file(splits, "splits"), profile
    )
    fold_list = None if folds is None else [int(f) for f in folds.split(",") if f.strip()]

    def log(name, k, o):
        if not as_json:
            console.print(f"{name} fold {k}: {len(o.y)} test utterances, {o.info.get('seconds')} s")

    if noise_dir is not None and not noise_dir.is_dir():
        from ser.errors import ConfigError

        raise ConfigError(f"noise folder not found: {noise_dir}")
    features = FeatureSource(
        cache or out / "cache", workers=workers, progress=not as_json, noise_dir=noise_dir, executor=ex
    )
    cv = CrossValidateJob(frame, split_frame, spec, classes, out, features, fold_list, seed, log, ex).run()
    _report(cv.outputs, frame, classes, out / spec.name, spec.name, as_json)


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
    from ser.data.labels import apply_profile
    from ser.data.schema import read_manifest
    from ser.jobs.data import present_classes
    from ser.jobs.evaluate import load_folds

    frame, _ = apply_profile(read_manifest(require_file(manifest, "manifest")), profile)
    outs = load_folds(run, model)
    classes = present_classes(frame, profile)
    _report(outs, frame, classes, run / model, model, as_json)


def _report(outputs, frame, classes, out_dir: Path, name: str, as_json: bool) -> None:
    from ser.evaluate.calibration import ECE_BINS
    from ser.jobs.evaluate import CVReportJob

    rep = CVReportJob(outputs, frame, classes, name, out_dir / "report").run()
    cv = rep.evaluation["cv"]["metrics"]
    summary = rep.summary()
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
    if summary["temperature"] is not None:
        console.print(
            f"calibration: temperature {summary['temperature']:.2f}, ECE {summary['ece']:.3f} → "
            f"{summary['ece_calibrated']:.3f} ({ECE_BINS} bins, out of fold)",
            highlight=False,
        )
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
    from ser.jobs.train import CrossCorpusJob, FeatureSource
    from ser.train.recipes import get_recipe

    torch.set_num_threads(max(1, threads))
    res = CrossCorpusJob(
        read_manifest(require_file(train_manifest, "training manifest")),
        read_manifest(require_file(test_manifest, "test manifest")),
        get_recipe(model, recipe_overrides(config)),
        profile,
        out,
        FeatureSource(cache or out / "cache", workers=workers, progress=not as_json),
        normalize=normalize,
        seed=seed,
    ).run()
    if as_json:
        print_json(res)
        return
    console.print(
        f"{res['model']}: {'+'.join(res['train_corpora'])} → {'+'.join(res['test_corpora'])} ({profile}, "
        f"{len(res['classes'])} classes): UAR {100 * res['uar']:.1f} % (chance {100 * res['chance_uar']:.0f} %), "
        f"accuracy {100 * res['accuracy']:.1f} %"
    )
    console.print(f"report: {res['report']}")
