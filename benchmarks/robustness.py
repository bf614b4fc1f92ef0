"""Robustness of RAVDESS-8 models to real channels: clean vs degraded test folds, with and without robustness
augmentation (the ``robust`` recipe field, :mod:`ser.train.robust`).

Usage (the full protocol is the default: 6 folds x 2 recipes at their own epochs, about 12 min per cnn fold on an
idle 2-core machine and roughly three times that for ``cnn-robust``, which trains on two variants per clip)::

    .venv/bin/python benchmarks/robustness.py
    nice -n 10 .venv/bin/python benchmarks/robustness.py --folds 0 --epochs 3   # a cut run (marked "cut" in the JSON)

Protocol: split ``ravdess6`` (test actors 1-4, 5-8, ..., 21-24); each recipe is trained per fold on the other
actors (``cnn-robust`` also on seeded degraded variants of its training clips, drawn from the *training* noises:
babble, volvo_car, pink, white, generated), then the fold's test clips are scored clean and through each test
condition (:data:`CONDITIONS`): the telephone channel, the *held-out* noise recordings (factory1, icra5_speechlike,
never used in training) at 10 and 0 dB SNR, a room the training draws never place (RT60 0.7 s, position seed 7;
training uses seeds 0-3), and an MP3 round trip. Test-side degradations are fixed and seeded per (clip, condition)
from :data:`TEST_SEED`, a namespace the training draws never use. For each noise condition the score is also given
with the silence trim taken from the clean clip ("clean trim"): how much of the loss is the level trim being
defeated by noise (it keeps every frame of a noisy clip).

Reported per recipe and condition: UAR pooled over the folds run, with a 95 % speaker-cluster bootstrap CI
(:func:`ser.evaluate.bootstrap_ci`), accuracy, per-gender UAR and the gender gap (female - male); per condition
the difference robust - baseline with a paired speaker bootstrap CI. Resumable: each fold's model
(``benchmarks/runs/robustness/<tag>/<recipe>/fold_k/model.pt``, a screen's under ``screen-<name>/<tag>/``,
mid-training checkpoints beside it) and each (fold, condition)'s probabilities are kept; degraded test features
are cached by (clip, condition, seed). A fold that ``ravdess_cv.py`` already trained (same recipe, seed, rows and
robust variants) is adopted, not trained again; that is how a distilled recipe (``--recipes
cnn,cnn-distil-robust``) is scored: its folds, teachers included, are trained by ``ravdess_cv.py`` and adopted here.
Results: ``benchmarks/results/robustness.json`` and the "Robustness" section of ``benchmarks/RESULTS.md``; a screen
of candidates (``--screen NAME``) writes ``robustness_screen_NAME.json`` and its own section instead, so screens
neither replace the record nor each other.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from _common import HERE, NOISE_DIR, RESULTS_DIR, SHARED, machine, replace_section, screen_name
from ser.io import atomic_path, write_json

RAVDESS = Path(os.environ.get("SER_RAVDESS", SHARED / "ravdess"))
RUNS = HERE / "runs" / "robustness"
CACHE = HERE / "runs" / "feature_cache"
RESULTS_JSON = RESULTS_DIR / "robustness.json"
CV_RUNS = HERE / "runs" / "ravdess_cv"
"""``benchmarks/ravdess_cv.py``'s fold folder: a full-protocol fold trained here is saved there too."""
ADOPT_FROM = (CV_RUNS, HERE / "runs" / "ray_cv" / "ray", HERE / "runs" / "ray_cv" / "local")
"""Cross-validation runs whose finished folds a recipe without variants adopts (the same training, not repeated)."""

RECIPES = ("cnn", "cnn-robust")
"""Baseline and the same recipe with robustness augmentation (its ``robust`` field)."""
CONDITIONS: tuple[str, ...] = (
    "clean",
    "telephone",
    "noise-10db:factory1",
    "noise-0db:factory1",
    "noise-10db:icra5_speechlike",
    "noise-0db:icra5_speechlike",
    "reverb:0.7@7",
    "codec:mp3",
)
"""Test-side conditions (condition strings of :func:`ser.degrade.parse`); noises are the held-out recordings."""
SMALL_PARAMS: dict[str, Any] = {"channels": [8, 16, 32], "convs": [1, 1, 1], "time_pool": [2, 2, 2]}
"""``--small``: the network of the ``cnn-small`` recipe (pooling and input normalisation stay ``cnn``'s)."""
TEST_SEED = 20261202
"""Seeds every test-side degradation (with the clip's content hash and the condition)."""
CLEAN_TRIM = "|clean trim"
"""Suffix of a noise condition scored with the silence trim of the clean clip."""


# ---- pure parts ------------------------------------------------------------------------------------------------


def condition_seed(sha: str, condition: str) -> int:
    """The seed of ``condition`` on the clip with content hash ``sha``: fixed, and apart from any training draw."""
    text = f"{TEST_SEED}:{str(sha).lower()}:{condition}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def check_test_condition(condition: str) -> None:
    """A test condition must parse and may mix only held-out noises (the training noises would test seen noise)."""
    from ser import degrade as d

    for step in d.parse(condition):
        if isinstance(step, d.Noise) and step.noise not in d.HELD_OUT_NOISES:
            raise SystemExit(f"test condition {condition!r}: noise {step.noise!r} is not held out from training")


def degrade_clip(y: np.ndarray, sr: int, sha: str, condition: str, noises: Any) -> np.ndarray:
    """``y`` through ``condition``, seeded by :func:`condition_seed`: the same clip and condition, the same samples."""
    from ser import degrade as d

    return d.apply(y, sr, condition, condition_seed(sha, condition), noises=noises)


def score(
    y: np.ndarray, pred: np.ndarray, speakers: np.ndarray, genders: np.ndarray, n_classes: int, n_boot: int = 1000
) -> dict[str, Any]:
    """UAR with a 95 % speaker-cluster bootstrap CI, accuracy, UAR per gender and the gap (female - male)."""
    from ser.evaluate import bootstrap_ci, uar_score

    ci = bootstrap_ci(y, pred, classes=list(range(n_classes)), speakers=speakers, n_boot=n_boot, seed=0)
    by_gender = {g: float(uar_score(y[genders == g], pred[genders == g])) for g in sorted(set(genders))}
    gap = by_gender["female"] - by_gender["male"] if {"female", "male"} <= set(by_gender) else None
    return {
        "n": len(y),
        "uar": ci["uar"]["estimate"],
        "uar_ci": [ci["uar"]["low"], ci["uar"]["high"]],
        "accuracy": ci["accuracy"]["estimate"],
        "uar_by_gender": by_gender,
        "gender_gap_uar": gap,
    }


def paired_difference(
    y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, speakers: np.ndarray, n_classes: int, n_boot: int = 1000
) -> dict[str, Any]:
    """UAR(b) - UAR(a) on the same clips, with a 95 % CI from resampling speakers (the same draw for both,
    :func:`ser.evaluate.metrics.paired_bootstrap_diff`): a difference whose CI excludes 0 is not explained by which
    speakers happened to be tested."""
    from ser.evaluate.metrics import paired_bootstrap_diff

    d = paired_bootstrap_diff(y, pred_b, pred_a, speakers, classes=list(range(n_classes)), n_boot=n_boot)["uar"]
    return {"uar_diff": float(d["diff"]), "ci": [float(d["low"]), float(d["high"])]}


def trim_overlap(clean_logmel: np.ndarray, logmel: np.ndarray, top_db: float | None) -> tuple[float, float]:
    """``(share of frames the level trim keeps, IoU of the kept span with the clean clip's)``: the trim keeps the
    frames within ``top_db`` of the loudest, which noise fills in."""
    from ser.model_folder import trim_bounds

    n = logmel.shape[1]
    spans = []
    for lm in (clean_logmel, logmel):
        lo, hi = trim_bounds(lm, top_db)
        m = np.zeros(n, dtype=bool)
        m[lo:hi] = True
        spans.append(m)
    return float(spans[1].mean()), float((spans[0] & spans[1]).sum() / max(1, (spans[0] | spans[1]).sum()))


# ---- the run ---------------------------------------------------------------------------------------------------


def _test_features(
    rows, condition: str, cfg, cache_root: Path, kinds: tuple[str, ...] = ("logmel",)
) -> dict[str, dict[str, np.ndarray]]:
    """Frame ``kinds`` (log-mel, and ``vad`` for a recipe that trims by voice activity) of every test clip through
    ``condition`` (cached by kind, clip, condition and seed); ``clean`` is the clean cache. Entries go to
    ``<cache_root>/<condition key>`` in the feature-cache layout."""
    from ser.audio import load_audio
    from ser.features.cache import FeatureCache
    from ser.features.frames import compute, one_blas_thread

    cache = FeatureCache(cache_root)
    out = {}
    for utt, path, sha in rows:
        key = hashlib.sha256(f"{sha}:{condition}:{condition_seed(sha, condition)}".encode()).hexdigest()
        hits = {k: cache.get(k, cfg.kind_hash(k), key) for k in kinds}
        missing = tuple(k for k, h in hits.items() if h is None)
        if missing:
            # compute() pins BLAS itself; the degradation is pinned too, so a test clip is the same bits whatever
            # this process's BLAS threads (the test cache holds clips rendered so)
            with one_blas_thread():
                x = degrade_clip(load_audio(path, cfg.sr), cfg.sr, sha, condition, NOISE_DIR)
                computed = compute(x, cfg, missing)
            for k in missing:
                cache.put(k, cfg.kind_hash(k), key, {"data": computed[k]})
                hits[k] = {"data": computed[k]}
        out[utt] = {k: h["data"] for k, h in hits.items() if h is not None}
    return out


def adopt_cv_fold(spec, k: int, roles, n_train: int, ckpt: Path, seed: int, n_variants: int = 0) -> Path | None:
    """Copy the finished checkpoint of fold ``k`` of ``spec`` from a cross-validation run of the benchmarks
    (:data:`ADOPT_FROM`: ``ravdess_cv.py``, ``ray_cv.py``) into ``ckpt`` when it trained this recipe (fingerprint,
    which fixes a robust recipe's variants), seed, validation speakers, training rows and ``n_variants`` robust
    variants (:func:`ser.train.distil.adopt_member` checks each); the fold then resumes finished instead of training
    again. A distilled recipe's teacher is copied beside it (``<ckpt>/../teacher``), so the student's soft targets
    are read back, not trained again. None when there is none to adopt."""
    from ser.train.distil import adopt_member

    speakers = {r: sorted(roles[r]["speaker"].unique().tolist()) for r in ("train", "val")}
    for run in ADOPT_FROM:
        fold = run / spec.name / f"fold_{k}"
        if adopt_member(spec, fold, ckpt, speakers, n_train, seed, n_variants) is not None:
            teacher = Path(f"{fold}_teacher")
            if spec.distil is not None and teacher.is_dir() and not (ckpt.parent / "teacher").exists():
                shutil.copytree(teacher, ckpt.parent / "teacher")
            return fold
    return None


def _train_fold(spec, k: int, roles, feats, classes, variants, fold_dir: Path, seed: int):
    """Fold ``k``'s model: read back when saved, else trained (resumable from its checkpoints) and saved."""
    from ser.models.factory import load_model, save_model
    from ser.train.cv import fit_spec, fold_inputs, student_targets

    path, facts = fold_dir / "model.pt", fold_dir / "train.json"
    if path.is_file() and facts.is_file():  # facts first, then the model: both there means the fold is done
        return load_model(path)[0], json.loads(facts.read_text())
    start = time.perf_counter()
    ids, x, y, sources = fold_inputs(spec, roles, feats, classes, variants)
    adopted = adopt_cv_fold(spec, k, roles, len(ids["train"]), fold_dir / "ckpt", seed, len(sources))
    if adopted is not None:
        print(f"{spec.name} fold {fold_dir.name}: adopted the cross-validation fold {adopted}", flush=True)
    # a distilled recipe: its teacher (read back when adopted with the fold) gives the student's soft targets
    _, logits = student_targets(
        spec, roles, ids, y, sources, feats, len(classes), seed - spec.seed, fold_dir / "teacher", progress=True
    )
    result, _ = fit_spec(spec, x, y, len(classes), seed, fold_dir / "ckpt", progress=True, teacher_logits=logits)
    info = {
        "seconds": round(time.perf_counter() - start, 1),
        "n_train": len(ids["train"]),
        "n_train_variants": len(sources),
        "epochs_run": int(result.epochs_run),
        "train_speakers": sorted(roles["train"]["speaker"].unique().tolist()),
        "test_speakers": sorted(roles["test"]["speaker"].unique().tolist()),
        **({"adopted_from": str(adopted.relative_to(HERE))} if adopted is not None else {}),
    }
    write_json(facts, info)
    save_model(path, result.model, {"classes": classes, "spec": spec.fingerprint()})
    return result.model.cpu().eval(), info


def _predict(model, spec, test_feats, clean_feats, ids, y, classes, clean_trim: bool) -> np.ndarray:
    from ser.model_folder import input_bounds
    from ser.train.cv import utterance_arrays
    from ser.train.data import ArrayDataset
    from ser.train.predict import predict_proba
    from ser.train.spec import train_config

    if clean_trim:  # the degraded frames inside the clean clip's trim bounds (the recipe's own trim)
        xs = []
        for u in ids:
            lo, hi = input_bounds(clean_feats[u], spec.trim, spec.trim_db)
            xs.append(np.ascontiguousarray(test_feats[u]["logmel"][:, lo:hi]))
    else:
        xs = utterance_arrays(spec, test_feats, ids)
    # scored as ser.train.cv scores its test fold (the recipe's eval_mode), since the clean fold is handed to it
    return predict_proba(model, ArrayDataset(xs, y, n_classes=len(classes)), eval_mode=train_config(spec).eval_mode)


def run_fold_conditions(spec, k, roles, feats, classes, manifest, args, tag) -> None:
    """Train (or read back) fold ``k`` of ``spec`` and save the test probabilities of every missing condition; a
    full-protocol fold is then handed to ``ravdess_cv.py`` (:func:`save_cv_fold`)."""
    fold_dir = runs_dir(tag, args.screen) / spec.name / f"fold_{k}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    wanted = [(c, False) for c in args.conditions] + [(c, True) for c in args.conditions if c.startswith("noise")]
    todo = [(c, t) for c, t in wanted if not (fold_dir / f"{c}{CLEAN_TRIM if t else ''}.npz").is_file()]
    if todo:
        _score_conditions(spec, k, roles, feats, classes, args, fold_dir, todo)
    if tag == "full":
        save_cv_fold(spec, k, fold_dir, roles)


def _score_conditions(spec, k, roles, feats, classes, args, fold_dir: Path, todo: list[tuple[str, bool]]) -> None:
    """Train (or read back) fold ``k``'s model and save its test probabilities under each ``(condition, clean
    trim)`` of ``todo``."""
    from ser.features import FeatureConfig
    from ser.jobs.train import FeatureSource
    from ser.train.recipes import feature_kinds

    variants = FeatureSource(cache_dir=CACHE, workers=args.workers, progress=True, noise_dir=NOISE_DIR).variants(spec)
    # the seed and roles of ser.train.cv's fold k (spec.seed + k), so a fold is the cross-validation's, both ways
    model, info = _train_fold(spec, k, roles, feats, classes, variants, fold_dir, seed=spec.seed + k)
    print(f"{spec.name} fold {k}: trained ({info})", flush=True)
    test = roles["test"][roles["test"]["utt_id"].isin(feats)]
    ids = test["utt_id"].tolist()
    y = np.array([classes.index(e) for e in test["emotion"]])
    rows = list(zip(ids, test["path"].astype(str), test["sha256"].astype(str), strict=True))
    cfg = FeatureConfig()
    kinds = tuple(sorted({"logmel"} | feature_kinds([spec])))
    for condition, clean_trim in todo:
        t0 = time.perf_counter()
        test_feats = feats if condition == "clean" else _test_features(rows, condition, cfg, RUNS / "test_cache", kinds)
        proba = _predict(model, spec, test_feats, feats, ids, y, classes, clean_trim)
        name = f"{condition}{CLEAN_TRIM if clean_trim else ''}"
        with atomic_path(fold_dir / f"{name}.npz") as tmp, open(tmp, "wb") as f:  # a file there is a whole one
            np.savez(f, proba=proba, y=y, utt_ids=np.array(ids))
        uar = float(np.mean([np.mean(proba[y == c].argmax(1) == c) for c in np.unique(y)]))
        print(f"  {name}: UAR {uar:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)


def save_cv_fold(spec, k: int, fold_dir: Path, roles) -> None:
    """Save fold ``k``'s clean test predictions as fold ``k`` of ``benchmarks/ravdess_cv.py``'s run of ``spec``
    (:func:`ser.train.cv.save_fold`, with the recipe's fingerprint): the clean condition of a full-protocol fold
    here is that protocol's fold (same split, seed ``spec.seed + k``, training rows and variants), so
    ``ravdess_cv.py --models <recipe>`` reads it back instead of training it again. A fold adopted from there, one
    already saved there, or one without its clean predictions is left alone."""
    from ser.models.factory import load_model
    from ser.train.cv import FoldOutput, load_fold, save_fold

    info = json.loads((fold_dir / "train.json").read_text())
    clean = fold_dir / "clean.npz"
    if "adopted_from" in info or not clean.is_file() or load_fold(CV_RUNS, spec.name, k) is not None:
        return
    with np.load(clean) as z:
        proba, y, ids = z["proba"], z["y"], [str(u) for u in z["utt_ids"]]
    facts = {
        **info,
        "spec": spec.fingerprint(),
        "n_params": int(load_model(fold_dir / "model.pt")[0].n_params()),
        "device": info.get("device", "cpu"),
        "n_test": len(y),
        "n_val": len(roles["val"]),
        "val_speakers": sorted(roles["val"]["speaker"].unique().tolist()),
        "trained_by": f"benchmarks/robustness.py ({fold_dir.relative_to(HERE)})",
    }
    save_fold(CV_RUNS, spec.name, k, FoldOutput(proba, y, ids, facts))


def trim_stats(args, test_rows, feats, top_db: float | None) -> dict[str, Any]:
    """Per condition, over the test clips: the share of frames the level trim keeps and the IoU of the kept span
    with the clean clip's (degraded features from the test cache)."""
    from ser.features import FeatureConfig

    out = {}
    for condition in args.conditions:
        test = (
            feats
            if condition == "clean"
            else _test_features(test_rows, condition, FeatureConfig(), RUNS / "test_cache")
        )
        pairs = [trim_overlap(feats[u]["logmel"], test[u]["logmel"], top_db) for u, _, _ in test_rows]
        out[condition] = {
            "kept": float(np.mean([p[0] for p in pairs])),
            "iou_clean": float(np.mean([p[1] for p in pairs])),
        }
    return out


def collect(args, tag, manifest, classes) -> dict[str, Any]:
    """Pool the saved probabilities over the folds run, per recipe and condition; score them."""
    meta = manifest.set_index("utt_id")
    names = [c for c in args.conditions] + [f"{c}{CLEAN_TRIM}" for c in args.conditions if c.startswith("noise")]
    pooled: dict[str, dict[str, tuple]] = {}
    results: dict[str, Any] = {}
    for recipe in args.recipes:
        results[recipe] = {}
        for name in names:
            parts = [np.load(runs_dir(tag, args.screen) / recipe / f"fold_{k}" / f"{name}.npz") for k in args.folds]
            y = np.concatenate([p["y"] for p in parts])
            pred = np.concatenate([p["proba"].argmax(1) for p in parts])
            ids = np.concatenate([p["utt_ids"] for p in parts])
            spk = meta.loc[ids, "speaker"].astype(str).to_numpy()
            gender = meta.loc[ids, "gender"].astype(str).to_numpy()
            pooled.setdefault(name, {})[recipe] = (y, pred, spk, ids)
            results[recipe][name] = score(y, pred, spk, gender, len(classes), args.n_boot)
    a = args.recipes[0]
    diffs: dict[str, Any] = {}
    for b in args.recipes[1:]:  # every other recipe against the first (the baseline), paired per speaker
        diffs[b] = {"of": f"{b} - {a}"}
        for name, by in pooled.items():
            (ya, pa, sa, ia), (_, pb, _, ib) = by[a], by[b]
            if list(ia) != list(ib):
                raise SystemExit(f"{name}: the recipes were scored on different clips")
            diffs[b][name] = paired_difference(ya, pa, pb, sa, len(classes), args.n_boot)
    return {"scores": results, "difference": diffs}


def screen_json(name: str) -> Path:
    """``--screen NAME``: a comparison of candidate recipes (the issue's "screen on 2-3 folds", or candidates on all
    six), kept in its own file beside the figures of record of ``robustness.json`` and beside the other screens."""
    return RESULTS_DIR / f"robustness_screen_{screen_name(name)}.json"


def runs_dir(tag: str, screen: str | None) -> Path:
    """Where a run keeps its fold models and probabilities: the record's under ``RUNS/<tag>``, a screen's under
    ``RUNS/screen-<name>/<tag>``. A screen may hold another run of a recipe of the record (adopted from
    ``ravdess_cv.py``, or trained later), so the two never share a fold folder: a rerun of the record scores the
    models its own folder holds. (Both still adopt a missing fold from ``ravdess_cv.py`` and hand it a full one.)"""
    return RUNS / tag if screen is None else RUNS / f"screen-{screen_name(screen)}" / tag


def fold_root(payload: dict[str, Any], path: Path) -> Path:
    """The fold folder of the run a results file ``path`` records (``payload``, its contents): its ``tag`` and
    ``screen``, or for a file written before they were recorded, ``full`` and the screen named by the file name
    (``robustness_screen_NAME.json``). Readers of a run's models and probabilities (``default_recipe.py``,
    ``calibration.py``) find them here."""
    screen = payload.get("screen")
    if "tag" not in payload and path.name.startswith("robustness_screen_"):
        screen = path.name.removeprefix("robustness_screen_").removesuffix(".json")
    return runs_dir(payload.get("tag", "full"), screen)


def heading(screen: str | None) -> str:
    """The RESULTS.md heading of the record (``screen`` None) or of one screen: each its own, so each keeps its own
    section (:func:`replace_section` replaces the section with the same heading)."""
    if screen is None:
        return "## Robustness: RAVDESS-8 under degraded test conditions"
    return f"## Recipe screen `{screen}` under degraded test conditions: candidates for the default recipe"


def write_results(payload: dict[str, Any], screen: str | None = None) -> None:
    path = RESULTS_JSON if screen is None else screen_json(screen)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    scores, recipes = payload["scores"], list(payload["scores"])
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    cut = payload["cut"]
    lines = [
        heading(screen),
        "",
        f"Machine: {payload['machine']}. Date: {payload['date']}. Produced by `benchmarks/robustness.py` "
        f"(`{payload['command']}`). "
        + (
            f"**Cut run** ({cut}): a screen (one fold pools 4 test actors, so CIs are wide; fewer epochs), not the "
            "figures of record, which need the full protocol (the script's default). "
            if cut
            else ""
        )
        + f"Folds: {payload['folds']} of ravdess6 (test actors {payload['test_actors']}); "
        "UAR pooled over those folds' test clips with a 95 % speaker-bootstrap CI; gap = UAR(female) - UAR(male); "
        "each recipe minus the first (the baseline) with a paired speaker-bootstrap CI. Test noises factory1 and "
        "icra5_speechlike are "
        "held out from training; the test room (RT60 0.7 s, position 7) is not one the training draws place. "
        "'clean trim': the noisy frames inside the clean clip's silence-trim bounds.",
        "",
        "| condition | "
        + " | ".join(f"{r} UAR [95 % CI] | {r} gap" for r in recipes)
        + "".join(f" | {r} - {recipes[0]} [95 % CI]" for r in recipes[1:])
        + " | level trim keeps (IoU with clean span) |",
        "|---|" + "---|---|" * len(recipes) + "---|" * (len(recipes) - 1) + "---|",
    ]
    for name in scores[recipes[0]]:
        cells = []
        for r in recipes:
            s = scores[r][name]
            cells += [f"{pct(s['uar'])} [{pct(s['uar_ci'][0])}, {pct(s['uar_ci'][1])}]", pct(s["gender_gap_uar"])]
        diffs = []
        for r in recipes[1:]:
            d = payload["difference"].get(r, {}).get(name)
            diffs.append(
                "-" if d is None else f"{100 * d['uar_diff']:+.1f} [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]"
            )
        t = payload.get("trim", {}).get(name)
        trim = "-" if t is None else f"{100 * t['kept']:.0f} % ({t['iou_clean']:.2f})"
        label = name.replace("|", "\\|")  # the clean-trim suffix's bar, escaped in a Markdown cell
        lines.append(f"| {label} | " + " | ".join([*cells, *diffs]) + f" | {trim} |")
    replace_section(heading(screen), "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", default="0,1,2,3,4,5", help="comma-separated fold indices (default: all 6)")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipes' epochs (a cut run)")
    ap.add_argument(
        "--small", action="store_true", help="a cut run on a busy machine: cnn-small's 8-16-32 network, 150-frame crops"
    )
    ap.add_argument(
        "--recipes", default=",".join(RECIPES), help="recipe names, the baseline first (the others are compared to it)"
    )
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument(
        "--screen",
        metavar="NAME",
        default=None,
        help="a comparison of candidates, not the record: written to robustness_screen_NAME.json and its own section",
    )
    args = ap.parse_args(argv)
    if args.screen is not None:
        screen_json(args.screen)  # a bad name fails now, not after every fold is scored
    args.folds = [int(f) for f in args.folds.split(",")]
    args.recipes = args.recipes.split(",")
    args.conditions = args.conditions.split(",")
    for c in args.conditions:
        if c != "clean":
            check_test_condition(c)

    import torch

    from ser.data.ingest import ingest
    from ser.data.labels import get_profile
    from ser.data.split import make_splits
    from ser.train.cv import fold_roles, load_frame_features
    from ser.train.recipes import feature_kinds, get_recipe

    torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {"train": {"epochs": args.epochs}} if args.epochs else {}
    if args.small:
        overrides["params"] = SMALL_PARAMS
        overrides["train"] = {**overrides.get("train", {}), "crop_frames": 150}
    specs = [get_recipe(r, overrides or None) for r in args.recipes]
    tag = ("full" if args.epochs is None else f"epochs{args.epochs}") + ("-small" if args.small else "")
    manifest = ingest("ravdess", RAVDESS, profile="ravdess8", workers=args.workers, progress=True).manifest
    classes = list(get_profile("ravdess8").classes)
    splits = make_splits(manifest, "ravdess6")
    kinds = tuple(sorted({"logmel"} | feature_kinds(specs)))  # a vad trim reads the "vad" kind too
    feats = load_frame_features(manifest, kinds, cache_dir=CACHE, workers=args.workers, progress=True)
    for spec in specs:
        for k in args.folds:
            roles = fold_roles(manifest, splits, k, spec.val_speakers, seed=spec.seed)
            run_fold_conditions(spec, k, roles, feats, classes, manifest, args, tag)
    payload = collect(args, tag, manifest, classes)
    test = pd.concat([fold_roles(manifest, splits, k, 0, 0)["test"] for k in args.folds], ignore_index=True)
    test = test[test["utt_id"].isin(feats)]
    test_rows = [(u, str(p), str(h)) for u, p, h in zip(test["utt_id"], test["path"], test["sha256"], strict=True)]
    payload["trim"] = trim_stats(args, test_rows, feats, specs[0].trim_db)
    test_actors = sorted({s for k in args.folds for s in fold_roles(manifest, splits, k, 0, 0)["test"]["speaker"]})
    cut = [] if args.epochs is None else [f"{args.epochs} epochs instead of the recipe's"]
    if args.small:
        cut.append("cnn-small's 8-16-32 network and 150-frame crops instead of cnn's")
    if len(args.folds) < 6:
        cut.append(f"{len(args.folds)} of 6 folds")
    payload = {
        "benchmark": "robustness",
        "cut": "; ".join(cut) or None,
        "command": "benchmarks/robustness.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "screen": args.screen,
        "tag": tag,
        "folds": args.folds,
        "test_actors": ", ".join(test_actors),
        "recipes": {s.name: {"fingerprint": s.fingerprint(), "robust": s.robust} for s in specs},
        "conditions": args.conditions,
        "test_seed": TEST_SEED,
        "train_noises": list(get_recipe("cnn-robust").robust["noises"]),
        "held_out_test_noises": ["factory1", "icra5_speechlike"],
        **payload,
    }
    write_results(payload, screen=args.screen)
    print(json.dumps(payload["difference"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
