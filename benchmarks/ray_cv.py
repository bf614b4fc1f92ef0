"""Cross-validation of the cnn recipe on RAVDESS (``ravdess6``), local vs Ray on the same cores: wall time and
whether the fold metrics are equal.

Usage::

    .venv/bin/python benchmarks/ray_cv.py                          # the full protocol: 6 folds, the recipe's epochs
    nice -n 10 .venv/bin/python benchmarks/ray_cv.py --folds 2 --epochs 2   # a cut run

Paths, each from empty run folders (nothing read back), on features extracted once beforehand (not timed):

- ``local``: the folds one after another in this process, torch on ``--threads`` threads (default 1);
- ``ray``: the folds as Ray tasks (``train.executor: ray``) on a local Ray instance of ``--cpus`` CPUs (default 2),
  each task pinned to ``--threads`` threads, so ``cpus / threads`` folds run at once; the instance's start is
  timed apart;
- ``local-N`` (``--baseline-threads N``, default 2; 0: off): today's default, the folds one after another with
  torch on N threads. Wall time only: a different thread count sums floating point in another order, so its
  predictions are not expected to be bit-equal.

``local`` and ``ray`` use the same seeds and threads per fold, so their predictions are compared bit for bit.
Results: ``benchmarks/results/ray_cv.json`` and the "Training on Ray" section of ``benchmarks/RESULTS.md``, both
saying whether the run was cut (fewer folds or epochs than the protocol) and the machine's load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import HERE, RESULTS_DIR, SHARED, machine, replace_section
from ser.data.ingest import ingest
from ser.data.labels import get_profile
from ser.data.split import make_splits
from ser.evaluate import uar_score
from ser.executor import Executor, connect_ray
from ser.train.cv import cross_validate, load_frame_features
from ser.train.recipes import RECIPES

RAVDESS = Path(os.environ.get("SER_RAVDESS", SHARED / "ravdess"))
RUNS = HERE / "runs" / "ray_cv"
CACHE = HERE / "runs" / "feature_cache"
RESULTS_JSON = RESULTS_DIR / "ray_cv.json"
FULL_FOLDS = 6


def load_data(workers: int) -> tuple:
    """RAVDESS-8: the manifest, its classes, the ``ravdess6`` actor folds and the log-mel features (cached)."""
    manifest = ingest("ravdess", RAVDESS, profile="ravdess8", workers=workers, progress=True).manifest
    splits = make_splits(manifest, "ravdess6")
    feats = load_frame_features(manifest, ("logmel",), cache_dir=CACHE, workers=workers, progress=True)
    return manifest, get_profile("ravdess8").classes, splits, feats


def run_path(name: str, spec, manifest, splits, feats, classes, folds, executor=None) -> dict:
    """Cross-validate ``spec`` from an empty run folder; wall time, per-fold UAR and the predictions."""
    out = RUNS / name
    shutil.rmtree(out, ignore_errors=True)

    def log(model, k, o):
        print(f"[{name}] fold {k}: UAR {uar_score(o.y, o.proba.argmax(1)):.4f} ({o.info.get('seconds')} s)", flush=True)

    start = time.perf_counter()
    outs = cross_validate(manifest, splits, spec, feats, classes, out, folds=folds, log=log, executor=executor)
    wall = time.perf_counter() - start
    return {
        "wall_s": round(wall, 1),
        "fold_train_s": [o.info.get("seconds") for o in outs],
        "uar_per_fold": [round(float(uar_score(o.y, o.proba.argmax(1))), 6) for o in outs],
        "best_epoch_per_fold": [o.info.get("best_epoch") for o in outs],
        "_outs": outs,
    }


def compare(a: list, b: list) -> dict:
    """Bit equality of two runs' fold predictions, and the largest probability difference."""
    same_ids = all(x.utt_ids == y.utt_ids for x, y in zip(a, b, strict=True))
    diff = max(float(np.max(np.abs(x.proba - y.proba))) for x, y in zip(a, b, strict=True))
    equal = same_ids and all(np.array_equal(x.proba, y.proba) for x, y in zip(a, b, strict=True))
    return {"predictions_equal": bool(equal), "max_abs_proba_diff": diff}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=FULL_FOLDS, help="the first N folds of ravdess6 (default 6)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per fold (default: the recipe's)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per fold, local and per Ray task")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--baseline-threads", type=int, default=2, help="also time local with N threads (0: off)")
    ap.add_argument("--workers", type=int, default=2, help="feature-extraction processes")
    ap.add_argument("--note", default="", help="a sentence on the conditions (e.g. the machine was shared)")
    ap.add_argument(
        "--ray-only",
        action="store_true",
        help="time the Ray path alone, against the local cnn row of ravdess_cv.json (same recipe, same machine "
        "class) instead of training every fold again locally; written to ray_cv_full.json",
    )
    args = ap.parse_args(argv)
    if args.ray_only:
        return main_ray_only(args)

    base = RECIPES["cnn"]
    epochs = args.epochs or int(base.train["epochs"])
    spec = base.model_copy(update={"train": {**base.train, "epochs": epochs, "num_threads": None}})
    folds = list(range(args.folds))
    cut = args.folds < FULL_FOLDS or epochs < int(base.train["epochs"])
    load_before = os.getloadavg()

    manifest, classes, splits, feats = load_data(args.workers)

    torch.set_num_threads(args.threads)
    paths = {"local": run_path("local", spec, manifest, splits, feats, classes, folds)}
    start = time.perf_counter()
    ray = connect_ray_with(args.cpus)
    ray_start = time.perf_counter() - start
    ex = Executor("ray", "local", cpus_per_task=args.threads)
    paths["ray"] = run_path("ray", spec, manifest, splits, feats, classes, folds, executor=ex)
    paths["ray"]["ray_start_s"] = round(ray_start, 1)
    ray.shutdown()
    if args.baseline_threads:
        torch.set_num_threads(args.baseline_threads)
        name = f"local-{args.baseline_threads}"
        paths[name] = run_path(name, spec, manifest, splits, feats, classes, folds)

    equality = compare(paths["local"]["_outs"], paths["ray"]["_outs"])
    equality["fold_uar_equal"] = paths["local"]["uar_per_fold"] == paths["ray"]["uar_per_fold"]
    for p in paths.values():
        p.pop("_outs")
    doc = {
        "protocol": {
            "recipe": "cnn",
            "split": "ravdess6",
            "folds": folds,
            "epochs": epochs,
            "full_protocol": {"folds": FULL_FOLDS, "epochs": int(base.train["epochs"])},
            "cut": cut,
            "threads_per_fold": args.threads,
            "ray_cpus": args.cpus,
        },
        "paths": paths,
        "local_vs_ray": equality,
        "speedup_ray_vs_local": round(paths["local"]["wall_s"] / paths["ray"]["wall_s"], 2),
        "load_average_before": [round(x, 1) for x in load_before],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
        "note": args.note,
        "date": dt.date.today().isoformat(),
        "machine": machine(),
    }
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(doc, indent=2) + "\n")
    write_section(doc)
    print(json.dumps(doc, indent=2), flush=True)
    return 0


def main_ray_only(args) -> int:
    """The full protocol on Ray alone, set beside the recorded local run of the same recipe.

    Training every fold locally again costs about 75 minutes of these 2 cores for a figure already on record (the
    ``cnn`` row of ``ravdess_cv.json``: folds one after another, torch on 2 threads); this path measures only what
    is new. Its predictions are not compared bit for bit with that row (other thread count, see the module
    docstring): the cut run of ``main`` and ``tests/train/test_ray.py`` carry the equality.
    """
    base = RECIPES["cnn"]
    epochs = int(base.train["epochs"])
    spec = base.model_copy(update={"train": {**base.train, "epochs": epochs, "num_threads": None}})
    folds = list(range(FULL_FOLDS))
    ref = next(r for r in json.loads((RESULTS_DIR / "ravdess_cv.json").read_text()) if r["model"] == "cnn")
    load_before = os.getloadavg()
    manifest, classes, splits, feats = load_data(args.workers)
    start = time.perf_counter()
    ray = connect_ray_with(args.cpus)
    ray_start = time.perf_counter() - start
    ex = Executor("ray", "local", cpus_per_task=args.threads)
    result = run_path("ray", spec, manifest, splits, feats, classes, folds, executor=ex)
    result.pop("_outs")
    result["ray_start_s"] = round(ray_start, 1)
    ray.shutdown()
    uars = result["uar_per_fold"]
    local_wall = round(float(ref["train_seconds_per_fold"]) * FULL_FOLDS, 1)
    doc = {
        "protocol": {
            "recipe": "cnn",
            "split": "ravdess6",
            "folds": folds,
            "epochs": epochs,
            "cut": False,
            "threads_per_fold": args.threads,
            "ray_cpus": args.cpus,
        },
        "ray": result,
        "ray_uar_mean": round(float(np.mean(uars)), 4),
        "local_reference": {
            "source": "benchmarks/results/ravdess_cv.json, model cnn",
            "date": ref["date"],
            "machine": ref["machine"],
            "threads": 2,
            "wall_s": local_wall,
            "train_seconds_per_fold": ref["train_seconds_per_fold"],
            "uar_per_fold": ref["uar_per_fold"],
            "uar_mean": ref["uar_mean"],
        },
        "speedup_ray_vs_local": round(local_wall / (result["wall_s"] + ray_start), 2),
        "load_average_before": [round(x, 1) for x in load_before],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
        "note": args.note,
        "date": dt.date.today().isoformat(),
        "machine": machine(),
    }
    (RESULTS_DIR / "ray_cv_full.json").write_text(json.dumps(doc, indent=2) + "\n")
    write_full_section(doc)
    print(json.dumps(doc, indent=2), flush=True)
    return 0


def write_full_section(doc: dict) -> None:
    p, r, ref = doc["protocol"], doc["ray"], doc["local_reference"]
    total = round(r["wall_s"] + r["ray_start_s"], 1)
    equal = [round(u, 4) for u in r["uar_per_fold"]] == [round(u, 4) for u in ref["uar_per_fold"]]
    same = (
        "Every fold's UAR equals the local run's (to the 4 decimals on record): the Ray path trains the same models."
        if equal
        else "The fold UARs differ from the local row (other threads per fold: floating-point sums in another "
        "order); with the same threads per fold the predictions are bit-equal (the cut run above and "
        "`tests/train/test_ray.py`)."
    )
    lines = [
        "## Training on Ray: the full 6-fold cross-validation (RAVDESS-8, cnn)",
        "",
        f"Machine: {doc['machine']}. Date: {doc['date']}. Produced by `benchmarks/ray_cv.py --ray-only`: the full "
        f"protocol ({len(p['folds'])} folds, {p['epochs']} epochs) on Ray, beside the local run on record. Load "
        f"average before / after: {doc['load_average_before'][0]} / {doc['load_average_after'][0]}. "
        f"{doc['note']}".rstrip(),
        "",
        "| path | wall s (whole CV) | train s per fold | UAR mean | UAR per fold |",
        "|---|---|---|---|---|",
        f"| local, torch on {ref['threads']} threads, folds one after another (`ravdess_cv.json`, {ref['date']}) | "
        f"{ref['wall_s']} (6 × {ref['train_seconds_per_fold']}) | {ref['train_seconds_per_fold']} | "
        f"{100 * ref['uar_mean']:.1f} % | {', '.join(f'{100 * u:.1f}' for u in ref['uar_per_fold'])} |",
        f"| Ray, {p['ray_cpus']} CPUs, {p['threads_per_fold']} thread per fold task "
        f"({p['ray_cpus'] // p['threads_per_fold']} at once) | {total} (Ray start {r['ray_start_s']}) | "
        f"{', '.join(str(s) for s in r['fold_train_s'])} | {100 * doc['ray_uar_mean']:.1f} % | "
        f"{', '.join(f'{100 * u:.1f}' for u in r['uar_per_fold'])} |",
        "",
        f"Speed-up of Ray over the local default, whole cross-validation: **{doc['speedup_ray_vs_local']}x** on the "
        f"same 2 cores. {same}",
        "",
    ]
    replace_section(lines[0], "\n".join(lines))


def connect_ray_with(cpus: int):
    """A private local Ray instance of ``cpus`` CPUs (what ``train.ray_address: local`` starts, sized here)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    return connect_ray("local")


def write_section(doc: dict) -> None:
    p = doc["protocol"]
    eq = doc["local_vs_ray"]
    cut = (
        f"**Cut run**: {len(p['folds'])} of {p['full_protocol']['folds']} folds, {p['epochs']} of "
        f"{p['full_protocol']['epochs']} epochs; the full protocol is the script's default."
        if p["cut"]
        else "Full protocol."
    )
    lines = [
        "## Training on Ray: cross-validation, local vs Ray (RAVDESS-8, cnn)",
        "",
        f"Machine: {doc['machine']}. Date: {doc['date']}. Produced by `benchmarks/ray_cv.py`. {cut} "
        f"Load average before / after: {doc['load_average_before'][0]} / {doc['load_average_after'][0]}. "
        f"{doc['note']}".rstrip(),
        "",
        f"Each fold trains with torch on {p['threads_per_fold']} thread(s); Ray runs the folds as tasks on a local "
        f"instance of {p['ray_cpus']} CPUs ({p['ray_cpus'] // p['threads_per_fold']} at once). Features extracted "
        "once beforehand (not timed). Wall time is the whole cross-validation from empty run folders.",
        "",
        "| path | wall s | fold train s | UAR per fold |",
        "|---|---|---|---|",
    ]
    for name, r in doc["paths"].items():
        label = {"local": f"local, {p['threads_per_fold']} thread(s), folds one after another",
                 "ray": f"ray, {p['threads_per_fold']} CPU per task (Ray start {r.get('ray_start_s')} s apart)"}.get(
            name, f"local, {name.split('-')[-1]} threads, folds one after another (today's default)")  # fmt: skip
        uars = ", ".join(f"{100 * u:.1f} %" for u in r["uar_per_fold"])
        lines.append(f"| {label} | {r['wall_s']} | {', '.join(str(s) for s in r['fold_train_s'])} | {uars} |")
    lines += [
        "",
        f"Ray vs local (same threads per fold): predictions bit-equal: **{'yes' if eq['predictions_equal'] else 'no'}**"
        f" (max |Δp| {eq['max_abs_proba_diff']:.3g}); fold UARs equal: "
        f"**{'yes' if eq['fold_uar_equal'] else 'no'}**. Speed-up of Ray over local: {doc['speedup_ray_vs_local']}x.",
        "",
    ]
    if len(doc["paths"]) > 2:
        lines[-1:] = [
            "The run with another thread count trains to other weights (floating-point sums in another order, "
            "amplified over training), hence its other UARs: equality needs the same threads per fold, which is why "
            "a Ray task pins torch to the CPUs it reserved.",
            "",
        ]
    replace_section("## Training on Ray", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
