"""The default recipe, by one rule: among the recipes of the robustness benchmark that serve a 3 s clip in at most
10 ms on one core and lose at most 2 UAR points on clean speech against the baseline without augmentation, the one
with the best mean UAR over its clean and degraded test conditions.

Usage (after ``benchmarks/robustness.py``, whose ``robustness.json`` it reads; on an otherwise idle machine, since it
times the serving path)::

    .venv/bin/python benchmarks/default_recipe.py

The clean-speech condition is measured against the first recipe of that run when it has no augmentation; a screen
of augmented candidates only (``--robustness robustness_screen_NAME.json``) is measured against the record's first
recipe (``cnn`` in ``robustness.json``, the same protocol and test clips).

Serving cost: each candidate's fold-0 model of that robustness run (its own fold folders,
:func:`robustness.fold_root`) is exported into a model folder
(:func:`ser.export.write_model_folder`, with the recipe's own trim) and timed with one onnxruntime thread (median of
50 calls after 5 warm-up calls): the served network on a real 3 s clip's 300 log-mel frames, what the rule budgets,
and beside it the whole serving path of :class:`ser.inference.Predictor` (features and trim included; decoding
excluded). The 6-fold table's inference column (the issue's "8 ms for the cnn, 25 for the ensemble") times the same
networks in PyTorch, which is slower than the onnxruntime graph that serves them.

The mean UAR is over the conditions of the run (clean, telephone, held-out noises at 10 and 0 dB, an unseen room,
MP3), each clip counted once per condition; the "clean trim" rows are diagnostics and do not count. The cross-corpus UAR
of the chosen recipe is reported beside it when ``cross_corpus.json`` has a full (not cut) neural row for it.

``--cross-corpus-only`` keeps the recorded choice and timings and only reads the chosen recipe's cross-corpus rows
afresh (after its ``cross_corpus.py`` run).

Results: ``benchmarks/results/default_recipe.json`` and the "Default recipe" section of ``benchmarks/RESULTS.md``.
``configs/ravdess.yaml`` names the chosen recipe (a test checks they agree).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import RESULTS_DIR, SHARED, machine, replace_section
from robustness import fold_root

RAVDESS = Path(os.environ.get("SER_RAVDESS", SHARED / "ravdess"))
ROBUSTNESS_JSON = RESULTS_DIR / "robustness.json"
CROSS_CORPUS_JSON = RESULTS_DIR / "cross_corpus.json"
RESULTS_JSON = RESULTS_DIR / "default_recipe.json"
LIMIT_MS = 10.0
"""The serving budget of the rule: a 3 s clip on one core."""
MAX_CLEAN_LOSS = 0.02
"""What a default may cost on clean speech against the baseline recipe without augmentation (the issue's "no more
than 2 points on clean speech", applied as a condition of the rule: a recipe that buys noise robustness with clean
accuracy is not a default, however good its mean)."""
CLIP = "Actor_01/03-01-05-01-01-01-01.flac"
"""The clip timed (an angry utterance of actor 1, cut or padded to 3 s)."""


# ---- pure parts ------------------------------------------------------------------------------------------------


def mean_uar(scores: dict[str, Any], conditions: list[str]) -> float:
    """The mean of a recipe's UAR over ``conditions`` (every one must be scored)."""
    missing = [c for c in conditions if c not in scores]
    if missing:
        raise SystemExit(f"the robustness results lack condition(s) {', '.join(missing)}")
    return float(np.mean([scores[c]["uar"] for c in conditions]))


def eligibility(
    serve_ms: float, clean_uar: float | None, base: float | None, limit_ms: float, max_clean_loss: float
) -> dict[str, bool]:
    """The rule's two conditions for one recipe: ``within_budget`` (``serve_ms <= limit_ms``) and ``keeps_clean``
    (its clean UAR at most ``max_clean_loss`` below the baseline's ``base``; true without a baseline), and
    ``eligible``, both."""
    within = serve_ms <= limit_ms
    keeps = base is None or clean_uar is None or clean_uar >= base - max_clean_loss - 1e-12
    return {"within_budget": within, "keeps_clean": keeps, "eligible": within and keeps}


def choose(
    mean: dict[str, float],
    serve_ms: dict[str, float],
    clean: dict[str, float] | None = None,
    *,
    limit_ms: float = LIMIT_MS,
    max_clean_loss: float = MAX_CLEAN_LOSS,
) -> str:
    """The recipe with the best ``mean`` UAR among those with ``serve_ms <= limit_ms`` and, given ``clean`` (clean
    UAR per recipe, the first one the baseline without augmentation), a clean UAR at most ``max_clean_loss`` below
    the baseline's (ties: the first given)."""
    base = None if clean is None else clean[next(iter(clean))]
    eligible = [
        r
        for r in mean
        if eligibility(serve_ms[r], None if clean is None else clean[r], base, limit_ms, max_clean_loss)["eligible"]
    ]
    if not eligible:
        raise SystemExit(f"no recipe serves a 3 s clip in {limit_ms} ms and keeps clean speech: {serve_ms}, {clean}")
    return max(eligible, key=lambda r: mean[r])


SAME_PROTOCOL = ("folds", "conditions", "test_seed", "cut")
"""What a robustness run and the record must share for one's clean UAR to be a baseline for the other's recipes."""


def clean_baseline(results: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """The recipe without augmentation whose clean UAR the rule's clean-speech condition is measured against: the first
    recipe of the first of ``results`` (name -> robustness results, the run the candidates come from first) whose
    first recipe has no robust variants. A screen of augmented candidates only takes it from the record
    (``robustness.json``), which must have run the same protocol (:data:`SAME_PROTOCOL`: folds, conditions, test
    seed, no cut): the same test clips, degraded the same way."""
    run = next(iter(results.values()))
    for name, res in results.items():
        first = None if res is None else next(iter(res["scores"]))
        if res is None or res["recipes"][first].get("robust"):
            continue
        differ = [k for k in SAME_PROTOCOL if res.get(k) != run.get(k)]
        if differ:
            raise SystemExit(f"{name} ran another protocol ({', '.join(differ)} differ): no clean baseline here")
        return {"recipe": first, "clean_uar": res["scores"][first]["clean"]["uar"], "from": name}
    raise SystemExit(f"no baseline without augmentation comes first in {', '.join(results)}")


# ---- measurement -----------------------------------------------------------------------------------------------


def serve_ms(model_pt: Path, spec: Any, classes: list[str], clip: np.ndarray, repeats: int = 50) -> dict[str, float]:
    """Median ms, one onnxruntime thread, of the model saved at ``model_pt`` exported with ``spec``'s trim:
    ``network``, its graph on the 3 s clip's 300 log-mel frames (what the rule budgets, as the 6-fold table's
    "inference ms / 3 s clip"), and ``path``, the whole :meth:`Predictor.predict_proba` (features and trim too)."""
    from ser.export import write_model_folder
    from ser.features import FeatureConfig
    from ser.features.frames import compute
    from ser.inference import Predictor
    from ser.models.factory import load_model

    model = load_model(model_pt)[0].eval()
    frames = compute(clip, FeatureConfig(), ("logmel",))["logmel"][:, :300]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_model_folder(
            Path(tmp) / "m", model, labels=classes, feature_config=FeatureConfig(), trim=spec.trim, trim_db=spec.trim_db
        )
        pred = Predictor(folder, threads=1)
        for name, call in (("network", lambda: pred.logits(frames)), ("path", lambda: pred.predict_proba(clip))):
            for _ in range(5):
                call()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                call()
                times.append(1000 * (time.perf_counter() - t0))
            out[name] = float(np.median(times))
    return out


def cross_corpus_rows(recipe: str, path: Path = CROSS_CORPUS_JSON) -> list[dict[str, Any]]:
    """``{train, test, adaptation, uar, uar_ci}`` of each cross-corpus row of ``recipe``'s full (not cut) neural
    run in ``cross_corpus.json`` (key ``neural[recipe]``), then its joint-training rows (``train``: the corpora
    pooled, ``adaptation``: ``joint``); [] when there is none."""
    if not path.is_file():
        return []
    run = json.loads(path.read_text()).get("neural", {}).get(recipe)
    if not isinstance(run, dict) or run.get("cut"):
        return []

    def row(r: dict[str, Any], train: str, test: str, adaptation: str) -> dict[str, Any]:
        ci = [r["ci"]["uar"]["low"], r["ci"]["uar"]["high"]]
        return {"train": train, "test": test, "adaptation": adaptation, "uar": r["uar"], "uar_ci": ci}

    return [
        *(
            row(r, "+".join(r["train_corpora"]), "+".join(r["test_corpora"]), r.get("adaptation", "none"))
            for r in run.get("cross_corpus", [])
        ),
        *(row(r, "+".join(r["train_corpora"]), r["test_corpus"], "joint") for r in run.get("joint", [])),
    ]


def refresh_cross_corpus(payload: dict[str, Any], path: Path = CROSS_CORPUS_JSON) -> dict[str, Any]:
    """A recorded choice (``default_recipe.json``) with the cross-corpus rows of its chosen recipe read afresh: the
    cross-corpus run of a recipe comes after the rule chose it, and needs no new timing nor robustness models."""
    return {**payload, "cross_corpus": cross_corpus_rows(payload["chosen"], path)}


def write_results(payload: dict[str, Any]) -> None:
    RESULTS_JSON.write_text(json.dumps(payload, indent=2) + "\n")
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    first = payload["candidates"][0]  # a record written before the field: the first candidate was the baseline
    b = payload.get("clean_baseline") or {**first, "from": payload["robustness_file"]}
    lines = [
        "## Default recipe",
        "",
        f"Machine: {payload['machine']}. Date: {payload['date']}. Produced by `benchmarks/default_recipe.py` from "
        f"`{payload['robustness_file']}` ({payload['robustness_run']}). Rule: among the recipes that serve a 3 s "
        "clip in at most "
        f"{payload['limit_ms']:g} ms on one core (the served ONNX network on a real 3 s clip's 300 log-mel "
        "frames, one onnxruntime thread, median of 50; the whole serving path with features and trim beside it; the "
        "6-fold table's inference column times the same networks in PyTorch, which is slower; load average before "
        "timing "
        f"{payload['load_before_timing']:.2f}) and lose at most {100 * payload['max_clean_loss']:g} UAR points on "
        "clean speech against the baseline without augmentation "
        f"(`{b['recipe']}`, {pct(b['clean_uar'])} % clean UAR in `{b['from']}`), the best mean UAR over the clean "
        "and degraded conditions. "
        + (
            f"A screen ({payload['robustness_cut']}): the candidates compared on the same folds; the chosen "
            "recipe's six-fold figures are in the Robustness section. "
            if payload["robustness_cut"]
            else ""
        )
        + f"Chosen: **{payload['chosen']}** (`configs/ravdess.yaml`).",
        "",
        "| recipe | mean UAR over conditions | clean UAR | clean loss vs baseline | network ms / 3 s clip | "
        "serving path ms | eligible |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in payload["candidates"]:
        why = [w for w, ok in (("over 10 ms", c["within_budget"]), ("costs clean speech", c["keeps_clean"])) if not ok]
        lines.append(
            f"| {c['recipe']}{' (chosen)' if c['recipe'] == payload['chosen'] else ''} | {pct(c['mean_uar'])} | "
            f"{pct(c['clean_uar'])} | {100 * c['clean_loss']:+.1f} | {c['serve_ms']:.2f} | "
            f"{c['serving_path_ms']:.2f} | "
            f"{'yes' if c['eligible'] else 'no: ' + ', '.join(why)} |"
        )
    cc = payload["cross_corpus"]
    rows = "; ".join(
        f"{r['train']} → {r['test']} ({r['adaptation']}) {pct(r['uar'])} [{pct(r['uar_ci'][0])}, {pct(r['uar_ci'][1])}]"
        for r in cc
    )
    lines += [
        "",
        f"Cross-corpus UAR (4 classes) of {payload['chosen']}: "
        + (rows or "not measured yet (no full neural run of it in `cross_corpus.json`)."),
    ]
    replace_section("## Default recipe", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit-ms", type=float, default=LIMIT_MS)
    ap.add_argument(
        "--robustness",
        type=Path,
        default=ROBUSTNESS_JSON,
        help="the robustness results the candidates come from (robustness.json, or robustness_screen_NAME.json)",
    )
    ap.add_argument(
        "--cross-corpus-only",
        action="store_true",
        help="keep the recorded choice and timings (default_recipe.json); only refresh the cross-corpus UAR beside it",
    )
    args = ap.parse_args(argv)
    if args.cross_corpus_only:
        write_results(refresh_cross_corpus(json.loads(RESULTS_JSON.read_text())))
        return 0
    import torch

    from ser.audio import load_audio
    from ser.data.labels import get_profile
    from ser.train.recipes import get_recipe

    torch.set_num_threads(1)
    rob = json.loads(args.robustness.read_text())
    conditions = list(rob["conditions"])
    if rob.get("cut") and ("epochs" in rob["cut"] or "network" in rob["cut"]):
        raise SystemExit(f"{args.robustness.name} comes from a run of other models than the recipes': rerun it first")
    root = fold_root(rob, args.robustness)
    classes = list(get_profile("ravdess8").classes)
    clip = load_audio(RAVDESS / CLIP, 16000)
    clip = np.pad(clip, (0, max(0, 48000 - len(clip))))[:48000].astype(np.float32)
    load = os.getloadavg()[0]
    candidates = []
    for recipe, scores in rob["scores"].items():
        spec = get_recipe(recipe)
        if spec.fingerprint() != rob["recipes"][recipe]["fingerprint"]:
            raise SystemExit(f"{recipe}: the recipe changed since {args.robustness.name} was written; rerun it")
        model_pt = root / recipe / f"fold_{min(rob['folds'])}" / "model.pt"
        if not model_pt.is_file():
            raise SystemExit(f"{recipe}: no {model_pt}: the models of {args.robustness.name} are not on this machine")
        cost = serve_ms(model_pt, spec, classes, clip)
        ms = cost["network"]
        candidates.append(
            {
                "recipe": recipe,
                "mean_uar": mean_uar(scores, conditions),
                "clean_uar": scores["clean"]["uar"],
                "uar_by_condition": {c: scores[c]["uar"] for c in conditions},
                "serve_ms": ms,
                "serving_path_ms": cost["path"],
            }
        )
        print(f"{recipe}: mean UAR {candidates[-1]['mean_uar']:.3f}, {cost} ms per 3 s clip", flush=True)
    own = args.robustness.resolve() == ROBUSTNESS_JSON.resolve()
    record = json.loads(ROBUSTNESS_JSON.read_text()) if ROBUSTNESS_JSON.is_file() and not own else None
    baseline = clean_baseline({args.robustness.name: rob, ROBUSTNESS_JSON.name: record})
    clean = {baseline["recipe"]: baseline["clean_uar"], **{c["recipe"]: c["clean_uar"] for c in candidates}}
    chosen = choose(
        {c["recipe"]: c["mean_uar"] for c in candidates},
        {c["recipe"]: c["serve_ms"] for c in candidates},
        clean,
        limit_ms=args.limit_ms,
    )
    base = baseline["clean_uar"]
    for c in candidates:
        c["clean_loss"] = base - c["clean_uar"]
        c.update(eligibility(c["serve_ms"], c["clean_uar"], base, args.limit_ms, MAX_CLEAN_LOSS))
    payload = {
        "benchmark": "default_recipe",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "limit_ms": args.limit_ms,
        "max_clean_loss": MAX_CLEAN_LOSS,
        "load_before_timing": load,
        "robustness_file": args.robustness.name,
        "robustness_run": f"{rob['command']}, {rob['date']}, folds {rob['folds']}",
        "robustness_cut": rob.get("cut"),
        "conditions": conditions,
        "clean_baseline": baseline,
        "candidates": candidates,
        "chosen": chosen,
        "cross_corpus": cross_corpus_rows(chosen),
    }
    write_results(payload)
    print(f"chosen: {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
