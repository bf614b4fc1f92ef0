"""Recipe sweep on the 6-fold speaker-independent RAVDESS-8 protocol, many (variant, fold) runs in parallel.

Made to use a lent GPU machine well: the machine has no corpus and no librosa, so ``pack`` writes what the runs
need (trimmed log-mel as float16, the manifest and the ravdess6 splits) into one folder that travels, and ``run``
trains every (variant, fold) pair in a process pool (one torch thread each; CUDA when present) through the same
``fold_roles`` + ``run_fold`` as ``benchmarks/ravdess_cv.py``. ``summary`` prints UAR per variant and of the
seed ensembles named in the variants file. Test actors are never seen before the final prediction.

Usage::

    .venv/bin/python benchmarks/sweep.py pack --out benchmarks/runs/sweep_data
    python3 benchmarks/sweep.py run --data benchmarks/runs/sweep_data --variants benchmarks/sweep_variants.json \
        --out /tmp/sweep --jobs 12; tar czf $OUT/sweep.tgz -C /tmp/sweep .   # one file comes back from a device
    python3 benchmarks/sweep.py summary --out runs/sweep --variants benchmarks/sweep_variants.json
    .venv/bin/python benchmarks/sweep.py record runs/sweep/summary.json [run.log ...] --device "..." --note "..." \
        [--name gpu_sweep --title "Recipe sweep on a GPU"]

Variants file: ``{"variants": [{"name": ..., "base": "cnn", "seed": 0, "overrides": {...},
"speaker_norm": false}], "ensembles": {"name": [member, ...]}}``. ``speaker_norm`` standardises every feature row per
speaker over all of that speaker's frames (no labels; transductive on the test speakers, so reported apart).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ser.data.labels import get_profile  # after the path set-up: the device has no installed ser
from ser.evaluate.metrics import uar_score

CLASSES = get_profile("ravdess8").classes
KINDS = ("logmel", "mfcc")  # the frame features of the torch recipes


def pack(out: Path) -> None:
    from _common import SHARED
    from ser.data.ingest import ingest
    from ser.data.split import make_splits
    from ser.model_folder import trim_bounds
    from ser.train.cv import load_frame_features

    here = Path(__file__).resolve().parent
    manifest = ingest("ravdess", SHARED / "ravdess", profile="ravdess8", workers=2).manifest
    splits = make_splits(manifest, "ravdess6")
    feats = load_frame_features(manifest, KINDS, cache_dir=here / "runs" / "feature_cache", workers=2)
    out.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        arrays = {}
        for u, f in feats.items():
            lo, hi = trim_bounds(f["logmel"], 40.0)  # the recipes' trim_db; trimming again is a no-op
            arrays[u] = f[kind][:, lo:hi].astype(np.float16)
        np.savez_compressed(out / f"{kind}.npz", **arrays)
    manifest[["utt_id", "speaker", "gender", "emotion"]].to_csv(out / "manifest.csv", index=False)
    splits.to_csv(out / "splits.csv", index=False)
    print(f"packed {len(arrays)} clips into {out}")


def _load(data: Path):
    manifest = pd.read_csv(data / "manifest.csv", dtype={"speaker": str})
    splits = pd.read_csv(data / "splits.csv", dtype={"speaker": str})
    feats: dict[str, dict[str, np.ndarray]] = {}
    for kind in KINDS:
        if (data / f"{kind}.npz").is_file():
            with np.load(data / f"{kind}.npz") as z:
                for u in z.files:
                    feats.setdefault(u, {})[kind] = z[u].astype(np.float32)
    return manifest, splits, feats


def speaker_normalised(manifest: pd.DataFrame, feats: dict) -> dict:
    """Each feature row (mel band, MFCC) standardised over all frames of the clip's speaker (labels are not used)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for _, rows in manifest.groupby("speaker"):
        ids = [u for u in rows["utt_id"] if u in feats]
        for kind in feats[ids[0]] if ids else ():
            cat = np.concatenate([feats[u][kind] for u in ids], axis=1)
            mean, std = cat.mean(1, keepdims=True), cat.std(1, keepdims=True) + 1e-5
            for u in ids:
                out.setdefault(u, {})[kind] = ((feats[u][kind] - mean) / std).astype(np.float32)
    return out


_STATE: dict = {}


def _worker_init(data: str, device: str) -> None:
    import torch

    torch.set_num_threads(1)
    manifest, splits, feats = _load(Path(data))
    _STATE.update(manifest=manifest, splits=splits, feats=feats, device=device)


def _job(variant: dict, fold: int, out: str) -> dict:
    from ser.train.cv import fold_roles, load_fold, run_fold, save_fold
    from ser.train.recipes import get_recipe

    out_dir = Path(out)
    done = load_fold(out_dir, variant["name"], fold)
    if done is None:
        overrides = json.loads(json.dumps(variant.get("overrides", {})))
        overrides.setdefault("train", {})["device"] = _STATE["device"]
        spec = get_recipe(variant.get("base", "cnn"), overrides)
        # the variant's seed is added to the recipe's, as the ``cnn-s1`` recipes do: it is part of the fingerprint
        spec = spec.model_copy(update={"name": variant["name"], "seed": spec.seed + int(variant.get("seed", 0))})
        feats = _STATE["feats"]
        if variant.get("speaker_norm"):
            feats = _STATE.setdefault("feats_spk", speaker_normalised(_STATE["manifest"], feats))
        roles = fold_roles(_STATE["manifest"], _STATE["splits"], fold, spec.val_speakers, spec.seed)
        done = run_fold(spec, roles, feats, CLASSES, seed=spec.seed + fold)  # cross_validate's seeding
        # equal to a recipe's fingerprint when the variant is that recipe; not for transformed features
        done.info["spec"] = None if variant.get("speaker_norm") else spec.fingerprint()
        save_fold(out_dir, variant["name"], fold, done)
    return {
        "variant": variant["name"],
        "fold": fold,
        "uar": uar_score(done.y, done.proba.argmax(1)),
        "seconds": done.info.get("seconds"),
    }


def run(data: Path, variants_file: Path, out: Path, jobs: int, device: str, folds: list[int]) -> None:
    import multiprocessing as mp

    spec = json.loads(variants_file.read_text())
    tasks = [(v, k) for v in spec["variants"] for k in folds]
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(str(data), device)) as ex:
        futures = [ex.submit(_job, v, k, str(out)) for v, k in tasks]
        for i, fut in enumerate(as_completed(futures), 1):
            try:
                r = fut.result()
                print(
                    f"[{i}/{len(tasks)} {time.perf_counter() - t0:.0f}s] {r['variant']} fold {r['fold']}: "
                    f"UAR {r['uar']:.3f} ({r['seconds']} s)",
                    flush=True,
                )
            except Exception as exc:  # one failed run must not lose the others
                print(f"[{i}/{len(tasks)}] FAILED: {exc!r}", flush=True)
    summary(out, variants_file)


def summary(out: Path, variants_file: Path) -> dict:
    from ser.train.cv import ensemble_folds, load_fold

    spec = json.loads(variants_file.read_text())
    rows, outputs = {}, {}
    for v in spec["variants"]:
        outs = [load_fold(out, v["name"], k) for k in range(6)]
        if any(o is None for o in outs):
            continue
        outputs[v["name"]] = outs
    for name, members in {**{n: [n] for n in outputs}, **spec.get("ensembles", {})}.items():
        if not all(m in outputs for m in members):
            continue
        outs = ensemble_folds([outputs[m] for m in members])
        uars = [uar_score(o.y, o.proba.argmax(1)) for o in outs]
        accs = [float(np.mean(o.proba.argmax(1) == o.y)) for o in outs]
        secs = [o.info.get("seconds", 0.0) for o in outs]
        rows[name] = {
            "uar_mean": round(float(np.mean(uars)), 4),
            "uar_std": round(float(np.std(uars, ddof=1)), 4),
            "acc_mean": round(float(np.mean(accs)), 4),
            "uar_per_fold": [round(u, 4) for u in uars],
            "train_seconds_per_fold": round(float(np.mean(secs)), 1),
            "members": members,
        }
    for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["uar_mean"]):
        print(
            f"{name:28s} UAR {100 * r['uar_mean']:.1f} ± {100 * r['uar_std']:.1f}  acc {100 * r['acc_mean']:.1f}  "
            f"folds {' '.join(f'{100 * u:.0f}' for u in r['uar_per_fold'])}  ({r['train_seconds_per_fold']} s)"
        )
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def summary_from_log(log: Path) -> dict:
    """Summary rows rebuilt from a ``run`` log's per-fold lines, for runs whose fold files were lost (accuracy is
    then unknown). Only variants with all 6 folds in the log get a row."""
    import re

    folds: dict[str, dict[int, tuple[float, float]]] = {}
    pattern = re.compile(r"\] (\S+) fold (\d+): UAR ([\d.]+) \(([\d.]+) s\)")
    for m in pattern.finditer(log.read_text()):
        folds.setdefault(m[1], {})[int(m[2])] = (float(m[3]), float(m[4]))
    rows = {}
    for name, by_fold in folds.items():
        if sorted(by_fold) != list(range(6)):
            continue
        uars = [by_fold[k][0] for k in range(6)]
        rows[name] = {
            "uar_mean": round(float(np.mean(uars)), 4),
            "uar_std": round(float(np.std(uars, ddof=1)), 4),
            "acc_mean": None,
            "uar_per_fold": uars,
            "train_seconds_per_fold": round(float(np.mean([by_fold[k][1] for k in range(6)])), 1),
            "members": [name],
        }
    return rows


def record(summaries: list[Path], device: str, note: str, name: str = "gpu_sweep", title: str = "") -> None:
    """Merge sweep ``summary.json`` files (or ``run`` logs, see :func:`summary_from_log`) into
    ``benchmarks/results/<name>.json`` and a RESULTS.md section headed ``title``."""
    import datetime as dt

    from _common import RESULTS_DIR, replace_section

    rows = {}
    for path in summaries:
        rows.update(summary_from_log(path) if path.suffix == ".log" else json.loads(path.read_text()))
    ranked = sorted(rows.items(), key=lambda kv: -kv[1]["uar_mean"])
    doc = {"device": device, "note": note, "date": dt.date.today().isoformat(), "variants": dict(ranked)}
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    heading = f"## {title or 'Recipe sweep on a GPU'} (RAVDESS-8, 6 folds)"  # whole line: no other title matches
    lines = [
        heading,
        "",
        f"Device: {device}. Date: {doc['date']}. Produced by `benchmarks/sweep.py` (variants in "
        "`benchmarks/sweep_variants*.json`). " + note,
        "",
        "| variant | members | UAR | accuracy | UAR per fold | s / fold (contended) |",
        "|---|---|---|---|---|---|",
    ]
    for variant, r in ranked:
        acc = "-" if r["acc_mean"] is None else f"{100 * r['acc_mean']:.1f} %"
        lines.append(
            f"| {variant} | {len(r['members'])} | {100 * r['uar_mean']:.1f} ± {100 * r['uar_std']:.1f} % | "
            f"{acc} | {' '.join(f'{100 * u:.0f}' for u in r['uar_per_fold'])} | "
            f"{r['train_seconds_per_fold']} |"
        )
    replace_section(heading, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--variants", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    r.add_argument("--device", default="auto")
    r.add_argument("--folds", default="0,1,2,3,4,5")
    s = sub.add_parser("summary")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--variants", type=Path, required=True)
    c = sub.add_parser("record")
    c.add_argument("summaries", type=Path, nargs="+")
    c.add_argument("--device", required=True)
    c.add_argument("--note", default="")
    c.add_argument("--name", default="gpu_sweep", help="results file stem under benchmarks/results/")
    c.add_argument("--title", default="", help="RESULTS.md section title (default: Recipe sweep on a GPU)")
    args = ap.parse_args(argv)
    if args.cmd == "record":
        record(args.summaries, args.device, args.note, args.name, args.title)
    elif args.cmd == "pack":
        pack(args.out)
    elif args.cmd == "run":
        run(args.data, args.variants, args.out, args.jobs, args.device, [int(k) for k in args.folds.split(",")])
    else:
        summary(args.out, args.variants)
    return 0


if __name__ == "__main__":
    sys.exit(main())
