"""The 6-fold speaker-independent RAVDESS-8 protocol (test folds = actors 1-4, 5-8, ..., 21-24) for every model.

Usage::

    .venv/bin/python benchmarks/ravdess_cv.py [--models classical,cnn,...] [--threads 2]   # the full protocol
    .venv/bin/python benchmarks/ravdess_cv.py --models cnn-distil                           # one recipe's row
    .venv/bin/python benchmarks/ravdess_cv.py --models cnn-distil --executor ray --threads 1  # its folds side by side
    nice -n 19 .venv/bin/python benchmarks/ravdess_cv.py --models cnn-distil --folds 0 --epochs 1   # a cut run

Per-fold predictions are kept under ``benchmarks/runs/ravdess_cv/`` (not committed), so a killed run resumes at
the first missing fold (a distilled recipe's per-fold teacher too, in ``<recipe>/fold_<k>_teacher``). Results:
``benchmarks/results/ravdess_cv.json`` (a list of objects, one per model, UAR as a fraction) and the RAVDESS section
of ``benchmarks/RESULTS.md``, written only by a run of the full protocol (all 6 folds, the recipes' epochs). A cut
run (``--folds`` fewer than all, or ``--epochs``: every recipe's epochs, a distilled recipe's teacher's included)
only prints its rows. A screen (``--folds`` at the recipes' epochs) keeps its folds with the full protocol's, which
resumes from them; a run with ``--epochs`` keeps them apart in ``benchmarks/runs/ravdess_cv/cut/``: it checks that a
recipe goes through end to end. Validation speakers for early stopping are carved out of each training fold; the
test actors are never seen before the final prediction (nor by a distilled recipe's teacher, trained on the fold's
training actors only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from _common import HERE, NOISE_DIR, RESULTS_DIR, SHARED, machine, replace_section
from ser.cli._executor_opts import EXECUTOR_HELP, RAY_ADDRESS_HELP, make_executor
from ser.data.ingest import ingest
from ser.data.labels import get_profile
from ser.data.split import make_splits
from ser.evaluate import aggregate_folds, evaluate_predictions, uar_score
from ser.executor import RAY_LOCAL
from ser.jobs.train import FeatureSource
from ser.models.factory import benchmark_forward, build_model
from ser.train.cv import cross_validate, ensemble_folds, load_frame_features
from ser.train.recipes import RECIPES, feature_kinds, members
from ser.train.spec import EnsembleSpec, ModelSpec

RAVDESS = Path(os.environ.get("SER_RAVDESS", SHARED / "ravdess"))
RUNS = HERE / "runs" / "ravdess_cv"
CACHE = HERE / "runs" / "feature_cache"
RESULTS_JSON = RESULTS_DIR / "ravdess_cv.json"
FULL_FOLDS = 6

SPECS = list(RECIPES.values())


def summarise(name: str, outputs, classes, n_params: int | None, infer_ms: float | None) -> dict:
    per_fold = [
        evaluate_predictions(o.y, o.proba.argmax(1), o.proba, classes=list(range(len(classes))), n_boot=0)
        for o in outputs
    ]
    agg = aggregate_folds(per_fold)
    m = agg["metrics"]
    return {
        "model": name,
        "uar_mean": round(float(m["uar"]["mean"]), 4),
        "uar_std": round(float(m["uar"]["std"] or 0.0), 4),
        "acc_mean": round(float(m["accuracy"]["mean"]), 4),
        "acc_std": round(float(m["accuracy"]["std"] or 0.0), 4),
        "macro_f1_mean": round(float(m["macro_f1"]["mean"]), 4),
        "uar_per_fold": [round(float(v), 4) for v in m["uar"]["values"]],
        "folds": len(outputs),
        "train_seconds_per_fold": round(float(np.mean([o.info.get("seconds", 0.0) for o in outputs])), 1),
        "trained_on": " / ".join(sorted({o.info.get("device", "cpu") for o in outputs})),
        "params": n_params,
        "infer_ms_per_3s_clip": infer_ms,
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        **distil_facts(outputs),
    }


def distil_facts(outputs) -> dict:
    """A distilled recipe's teacher (name, alpha, temperature) and its mean training time per fold; {} otherwise.
    ``train_seconds_per_fold`` of such a row is the fold as run: the teacher's training included when it ran then."""
    teachers = [o.info["teacher"] for o in outputs if "teacher" in o.info]
    if not teachers:
        return {}
    return {
        "distilled_from": teachers[0]["teacher"],
        "teacher_seconds_per_fold": round(float(np.mean([t.get("seconds", 0.0) for t in teachers])), 1),
    }


def cut_specs(specs: list, epochs: int) -> list:
    """``specs`` trained for ``epochs`` epochs (a cut run): every model spec, and a distilled one's teacher."""
    out = []
    for s in specs:
        if isinstance(s, ModelSpec):
            update: dict = {"train": {**s.train, "epochs": epochs}}
            if s.distil is not None:
                over = {**s.distil.teacher_overrides}
                over["train"] = {**over.get("train", {}), "epochs": epochs}
                update["distil"] = s.distil.model_copy(update={"teacher_overrides": over})
            s = s.model_copy(update=update)
        out.append(s)
    return out


def teacher(row: dict) -> str:
    """`` (distilled from X)`` for a distilled recipe's row, else nothing."""
    return f" (distilled from {row['distilled_from']})" if row.get("distilled_from") else ""


def write_results(rows: list[dict]) -> None:
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "## RAVDESS-8, 6-fold speaker-independent (actors 1-4, ..., 21-24)",
        "",
        f"Machine: {rows[0]['machine'] if rows else machine()}. Date: {dt.date.today().isoformat()}. "
        "Produced by `benchmarks/ravdess_cv.py`; UAR = balanced accuracy; mean ± std over folds. "
        "Train s/fold is the wall time of one fold's training as run (the cnn seeds, crnn, rnn and tdnn ran with 1 "
        "torch thread, two runs side by side on the 2 cores); an ensemble's is the sum of its members'. Trained on: "
        "the device of the folds (a fold from a GPU sweep counts when its recipe is identical). A distilled recipe's "
        "train s/fold includes training its teacher on the fold's training actors; its inference cost is its own.",
        "",
        "| model | folds | UAR | accuracy | macro F1 | trained on | train s/fold | params | "
        "inference ms / 3 s clip (1 thread, CPU) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']}{teacher(r)} | {r['folds']} | {100 * r['uar_mean']:.1f} ± {100 * r['uar_std']:.1f} % | "
            f"{100 * r['acc_mean']:.1f} ± {100 * r['acc_std']:.1f} % | {100 * r['macro_f1_mean']:.1f} % | "
            f"{r.get('trained_on', 'cpu')} | {r['train_seconds_per_fold']} | "
            f"{r['params'] if r['params'] is not None else '-'} | "
            f"{r['infer_ms_per_3s_clip'] if r['infer_ms_per_3s_clip'] is not None else '-'} |"
        )
    section = "\n".join(lines) + "\n"
    replace_section("## RAVDESS-8, 6-fold", section)


def runs_dir(epochs: int | None) -> Path:
    """Where a run keeps its folds: a screen (some folds, the recipes' epochs) trains exactly the folds the full
    protocol would (same recipe, seed and actors), so it keeps them with the full run's, which resumes from them; a
    run with ``--epochs`` trains other models and keeps them apart, in ``cut/``."""
    return RUNS / "cut" if epochs is not None else RUNS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(s.name for s in SPECS))
    ap.add_argument("--folds", default=None, help="comma-separated fold indices (default: all 6)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None, help="cut run: train every recipe this many epochs")
    ap.add_argument("--executor", default="local", help=EXECUTOR_HELP)
    ap.add_argument("--ray-address", default=RAY_LOCAL, help=RAY_ADDRESS_HELP)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    # ray: the folds side by side, each task on --threads threads (2 cores, --threads 1: two folds at once)
    executor = make_executor(args.executor, args.ray_address, args.threads)
    wanted = args.models.split(",")
    unknown = sorted(set(wanted) - {s.name for s in SPECS})
    if unknown:
        ap.error(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(s.name for s in SPECS)}")
    folds = None if args.folds is None else [int(f) for f in args.folds.split(",")]
    cut = args.epochs is not None or (folds is not None and sorted(set(folds)) != list(range(FULL_FOLDS)))
    runs = runs_dir(args.epochs)

    result = ingest("ravdess", RAVDESS, profile="ravdess8", workers=args.workers, progress=True)
    manifest = result.manifest
    classes = get_profile("ravdess8").classes
    splits = make_splits(manifest, "ravdess6")
    specs = [
        s
        for s in SPECS
        if s.name in wanted or s.name in {m.name for m in members([s for s in SPECS if s.name in wanted])}
    ]
    if args.epochs is not None:
        specs = cut_specs(specs, args.epochs)
    model_specs = members(specs)
    kinds = {"logmel"} | feature_kinds(model_specs)
    feats = load_frame_features(manifest, tuple(kinds), cache_dir=CACHE, workers=args.workers, progress=True)

    def log(name, k, out):
        uar = uar_score(out.y, out.proba.argmax(1))
        print(f"{name} fold {k}: UAR {uar:.3f} ({out.info.get('seconds')} s)", flush=True)

    # a robust recipe's variants: rendered from the training noises and cached beside the features, as
    # benchmarks/robustness.py renders them (its folds are saved here too, so a recipe it ran is not trained again)
    variants_of = FeatureSource(cache_dir=CACHE, workers=args.workers, progress=True, noise_dir=NOISE_DIR).variants
    outputs, rows = {}, []
    previous = {r["model"]: r for r in json.loads(RESULTS_JSON.read_text())} if RESULTS_JSON.exists() else {}
    for spec in specs:
        if isinstance(spec, EnsembleSpec):
            outs = ensemble_folds([outputs[m] for m in spec.members], spec.weights)
            n_params = sum(r["params"] or 0 for r in rows if r["model"] in spec.members)
            infer = sum(r["infer_ms_per_3s_clip"] or 0 for r in rows if r["model"] in spec.members)
            rows.append(summarise(spec.name, outs, classes, n_params, round(infer, 2)))
        else:
            outs = cross_validate(
                manifest,
                splits,
                spec,
                feats,
                classes,
                runs,
                folds=folds,
                progress=False,
                log=log,
                variants=variants_of(spec),
                executor=executor,
            )
            outputs[spec.name] = outs
            n_params, infer = outs[0].info.get("n_params"), None
            if spec.model != "classical":
                model = build_model(spec.model, len(classes), 64 if spec.features == "logmel" else 60, **spec.params)
                infer = round(benchmark_forward(model, seconds=3.0, num_threads=1)["ms_median"], 2)
            rows.append(summarise(spec.name, outs, classes, n_params, infer))
        print(json.dumps(rows[-1]), flush=True)
        if cut:  # only the full protocol adds or replaces a row
            print(f"cut run ({len(outs)} fold(s), epochs {args.epochs or 'as the recipe'}): not written", flush=True)
            continue
        merged = {**previous, **{r["model"]: r for r in rows}}
        write_results(sorted(merged.values(), key=lambda r: -r["uar_mean"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
