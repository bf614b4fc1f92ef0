"""Calibration of RAVDESS-8 models: temperature scaling fitted on clean out-of-fold predictions, ECE before and
after on clean speech and under degraded channels, and what an abstention threshold (``abstain_below``) buys.

Usage (reads saved probabilities only; seconds)::

    .venv/bin/python benchmarks/calibration.py
    .venv/bin/python benchmarks/calibration.py --robustness-root /elsewhere/robustness/full --cv-root cnn=/x/cnn
    .venv/bin/python benchmarks/calibration.py --screen distil --recipes cnn-robust-noisy-long,cnn-distil-robust

Inputs (nothing is trained): the robustness benchmark's per-fold probabilities
(``<robustness-root>/<recipe>/fold_<k>/<condition>.npz``, keys ``proba``, ``y``, ``utt_ids``) and, per recipe, an
optional cross-validation run of the same training (``<cv-root>/fold_<k>.npz``, the same keys), whose clean folds
join the calibration set when they agree with the robustness run's on every fold both have (the robustness
benchmark adopts those folds, so they are the same models).

Protocol: per recipe, the clean folds are the calibration set. The temperature applied to fold k's clips, clean or
degraded, is fitted on the clean predictions of the *other* folds (cross-fitted: it never saw fold k's speakers),
so the after-figures are honest; the shipped temperature is the fit on every clean fold (what a model folder would
carry). With one clean fold there is nothing to cross-fit: that row is "in-sample" (optimistic) and says so.
Degraded conditions use the folds that have every condition. ECE (15 bins) and NLL before and after, each with a 95
% speaker-cluster bootstrap CI, and after - before with a paired CI (the same speaker draw for both)
(:func:`ser.evaluate.calibration.paired_ece_bootstrap`). Abstention: per threshold on the calibrated top
probability, the answered share and accuracy / UAR on the answered clips
(:func:`ser.evaluate.calibration.abstention_curve`).

Results: ``benchmarks/results/calibration.json``, ``benchmarks/results/calibration.png`` and the "Calibration"
section of ``benchmarks/RESULTS.md``. A screen (``--screen NAME``: the recipes of the robustness screen of that name,
read from its own fold folders) writes ``calibration_screen_NAME.json`` / ``.png`` and its own section instead, so
neither the record nor another screen is replaced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from _common import HERE, RESULTS_DIR, machine, replace_section, screen_name
from robustness import CONDITIONS as ROBUSTNESS_CONDITIONS
from robustness import fold_root, runs_dir
from robustness import screen_json as robustness_screen_json

ROBUSTNESS_ROOT = runs_dir("full", None)
CV_ROOTS = {"cnn": HERE / "runs" / "ray_cv" / "ray" / "cnn"}
"""Cross-validation runs whose clean folds are the same models as the robustness run's (adopted there)."""
RECIPES = ("cnn", "cnn-robust", "cnn-robust-vad", "cnn-robust-noisy-long")
CONDITIONS = ROBUSTNESS_CONDITIONS
"""The robustness benchmark's test conditions; "clean" first."""
THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
ABSTAIN_CONDITIONS = ("clean", "telephone", "noise-10db:factory1", "noise-10db:icra5_speechlike")
N_FOLDS = 6
RESULTS_JSON = RESULTS_DIR / "calibration.json"
RESULTS_PNG = RESULTS_DIR / "calibration.png"

Fold = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(proba (n, K), y (n,), utt_ids (n,))`` of one fold under one condition."""


# ---- pure parts ------------------------------------------------------------------------------------------------


def speaker_of(utt_id: str) -> str:
    """``"ravdess:Actor_07/03-01-05-01-02-01-07"`` → ``"ravdess:07"``: the manifest's speaker id, as
    ``ser.data.ingest`` builds it (``<source name>:<actor>``, the actor being the RAVDESS file name's last field);
    a utt id of another shape is an error, not a guess."""
    corpus, _, rel = str(utt_id).partition(":")
    folder, _, stem = rel.rpartition("/")
    parts = stem.split("-")
    if not corpus or len(parts) != 7 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ValueError(f"not a RAVDESS utt id: {utt_id!r}")
    if folder.startswith("Actor_") and folder[len("Actor_") :] != parts[-1]:
        raise ValueError(f"folder and file name disagree on the actor: {utt_id!r}")
    return f"{corpus}:{parts[-1]}"


def same_clips(a: Fold, b: Fold) -> bool:
    """The same clips in the same order with the same labels."""
    return a[2].shape == b[2].shape and bool((a[2] == b[2]).all()) and bool((a[1] == b[1]).all())


def same_fold(a: Fold, b: Fold) -> bool:
    """The same clips and the same probabilities: the same model's predictions."""
    return same_clips(a, b) and a[0].shape == b[0].shape and np.allclose(a[0], b[0], atol=1e-9)


def pool(folds: dict[int, Fold]) -> Fold:
    """The folds' arrays concatenated in fold order."""
    keys = sorted(folds)
    return tuple(np.concatenate([folds[k][i] for k in keys]) for i in range(3))  # type: ignore[return-value]


def scaled(folds: dict[int, Fold], temps: dict[int, float]) -> np.ndarray:
    """Each fold's probabilities under its own temperature, concatenated in fold order ``(n, K)``."""
    from ser.evaluate.calibration import logits_of, scale

    return np.concatenate([scale(logits_of(folds[k][0]), temps[k]) for k in sorted(folds)])


def fold_temperatures(clean: dict[int, Fold], keys: list[int]) -> tuple[dict[int, float], str]:
    """The temperature per fold of ``keys``: fitted on the other clean folds (``"cross-fitted by fold"``) or, with
    a single clean fold, on it (``"in-sample"``)."""
    from ser.evaluate.calibration import cross_fitted_temperatures, fit_temperature, logits_of

    if len(clean) >= 2:
        ts = cross_fitted_temperatures({k: (p, y) for k, (p, y, _) in clean.items()}, keys)
        return {int(k): t for k, t in ts.items()}, "cross-fitted by fold"
    (p, y, _), = clean.values()  # fmt: skip
    t = fit_temperature(logits_of(p), y)
    return dict.fromkeys(keys, t), "in-sample"


def calibration_block(
    before: np.ndarray, after: np.ndarray, y: np.ndarray, ids: np.ndarray, n_boot: int
) -> dict[str, Any]:
    """ECE / NLL before and after with speaker CIs, plus accuracy and UAR (which temperature scaling leaves)."""
    from ser.evaluate import uar_score
    from ser.evaluate.calibration import paired_ece_bootstrap

    speakers = np.array([speaker_of(u) for u in ids])
    block = paired_ece_bootstrap(before, after, y, speakers, n_boot=n_boot)
    pred = before.argmax(1)
    block.update(accuracy=float(np.mean(pred == y)), uar=uar_score(y, pred))
    return block


def analyse(
    clean: dict[int, Fold],
    conditions: dict[str, dict[int, Fold]],
    *,
    thresholds: tuple[float, ...] = THRESHOLDS,
    abstain_conditions: tuple[str, ...] = ABSTAIN_CONDITIONS,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """One recipe: ``clean`` ``{fold: Fold}`` is the calibration set; ``conditions`` ``{condition: {fold: Fold}}``
    (every condition on the same folds, clean among them or not) are scored with the clean-fitted per-fold
    temperatures. JSON-ready ``{"clean", "conditions", "abstention"}``."""
    from ser.evaluate.calibration import abstention_curve, fit_temperature, logits_of, nll, paired_ece_bootstrap

    p, y, ids = pool(clean)
    temps, after_mode = fold_temperatures(clean, sorted(clean))
    shipped = fit_temperature(logits_of(p), y)
    after = scaled(clean, temps)
    out: dict[str, Any] = {
        "clean": {
            "folds": sorted(clean),
            "after": after_mode,
            "temperature": shipped,
            "fold_temperatures": {str(k): t for k, t in temps.items()},
            **calibration_block(p, after, y, ids, n_boot),
        },
        "conditions": {},
        "abstention": {},
    }
    if "clean" in abstain_conditions:
        out["abstention"]["clean"] = {"folds": sorted(clean), "curve": abstention_curve(after, y, thresholds)}
    for name, folds in conditions.items():
        if not folds:
            continue
        keys = sorted(folds)
        t_cond, mode = fold_temperatures(clean, keys)
        pc, yc, ic = pool(folds)
        ac = scaled(folds, t_cond)
        row = {"folds": keys, "after": mode, "fold_temperatures": {str(k): t for k, t in t_cond.items()}}
        own = fit_temperature(logits_of(pc), yc)  # a diagnostic: how far the condition's own best T is from clean's
        row.update(calibration_block(pc, ac, yc, ic, n_boot))
        row.update(own_temperature_in_sample=own, nll_own_temperature_in_sample=nll(logits_of(pc), yc, own))
        if name != "clean" and all(k in clean and same_clips(clean[k], folds[k]) for k in keys):
            # does the clean-fitted calibration hold? the condition's after-ECE minus clean's on the same clips
            clean_after = scaled({k: clean[k] for k in keys}, t_cond)
            speakers = np.array([speaker_of(u) for u in ic])
            vs = paired_ece_bootstrap(clean_after, ac, yc, speakers, n_boot=n_boot)["ece"]
            row["ece_after_vs_clean"] = {"clean": vs["before"], "diff": vs["diff"], "diff_ci": vs["diff_ci"]}
        out["conditions"][name] = row
        if name in abstain_conditions and name != "clean":
            out["abstention"][name] = {"folds": keys, "curve": abstention_curve(ac, yc, thresholds)}
    return out


# ---- I/O -------------------------------------------------------------------------------------------------------


def load_fold(path: Path) -> Fold | None:
    """``(proba, y, utt_ids)`` of a saved fold, or None when it is missing or unreadable (still being written)."""
    try:
        with np.load(path) as d:
            fold = (np.asarray(d["proba"], np.float64), np.asarray(d["y"], np.int64), np.asarray(d["utt_ids"]))
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    if fold[0].ndim != 2 or not len(fold[0]) == len(fold[1]) == len(fold[2]):
        return None
    return fold


def gather(
    recipe: str, robustness_root: Path, cv_root: Path | None, conditions: list[str], n_folds: int = N_FOLDS
) -> dict[str, Any]:
    """What exists for ``recipe``: ``{"clean": {k: Fold}, "conditions": {name: {k: Fold}}, "condition_folds",
    "clean_sources", "notes"}``. The conditions keep only folds that have every condition, on the clean clips."""
    notes: list[str] = []
    base = robustness_root / recipe
    runs = {k: {c: load_fold(base / f"fold_{k}" / f"{c}.npz") for c in conditions} for k in range(n_folds)}
    clean = {k: r["clean"] for k, r in runs.items() if r.get("clean") is not None}
    sources = dict.fromkeys(clean, "robustness")
    if cv_root is not None:
        cv = {k: f for k in range(n_folds) if (f := load_fold(cv_root / f"fold_{k}.npz")) is not None}
        shared = sorted(set(cv) & set(clean))
        if cv and all(same_fold(cv[k], clean[k]) for k in shared):
            for k in sorted(set(cv) - set(clean)):
                clean[k], sources[k] = cv[k], "cv"
            if not shared:
                notes.append(f"clean folds {sorted(cv)} from {cv_root}, with no robustness fold to check them against")
        elif cv:
            notes.append(f"{cv_root}: its clean folds differ from the robustness run's (another training); not used")
    complete = []
    for k, r in runs.items():
        if any(f is None for f in r.values()):
            continue
        ref = r["clean"]
        if not all(same_clips(f, ref) for f in r.values() if f is not None):
            notes.append(f"fold {k}: its conditions were scored on different clips; left out")
            continue
        complete.append(k)
    # the clean clips of the condition folds too (a row of its own when they are not every clean fold): the
    # like-for-like baseline of the degraded rows
    degraded = [c for c in conditions if c != "clean" or (complete and complete != sorted(clean))]
    return {
        "clean": dict(sorted(clean.items())),
        "clean_sources": {str(k): sources[k] for k in sorted(clean)},
        "condition_folds": complete,
        "conditions": {c: {k: runs[k][c] for k in complete} for c in degraded},
        "notes": notes,
    }


def pct(v: float | None, sign: bool = False) -> str:
    return "-" if v is None else (f"{100 * v:+.1f}" if sign else f"{100 * v:.1f}")


def _ci(c: list[float | None], sign: bool = False) -> str:
    return f"[{pct(c[0], sign)}, {pct(c[1], sign)}]"


def ece_cell(b: dict[str, Any]) -> str:
    """``"12.3 [10.1, 14.9] → 3.4 [2.8, 6.0]"``: ECE before → after in percent with their CIs."""
    e = b["ece"]
    return f"{pct(e['before'])} {_ci(e['before_ci'])} → {pct(e['after'])} {_ci(e['after_ci'])}"


def screen_json(name: str) -> Path:
    """``--screen NAME``: the calibration of a robustness screen's candidates, in its own file."""
    return RESULTS_DIR / f"calibration_screen_{screen_name(name)}.json"


def heading(screen: str | None) -> str:
    """The RESULTS.md heading of the record (``screen`` None) or of one screen (:func:`replace_section` replaces
    the section with the same heading)."""
    if screen is None:
        return "## Calibration: temperature scaling on RAVDESS-8, clean and degraded (issue: calibrated confidences)"
    return f"## Calibration screen `{screen}`: temperature scaling of candidate recipes on RAVDESS-8"


def section(payload: dict[str, Any], screen: str | None = None) -> str:
    """The RESULTS.md section: protocol, the ECE table per recipe and condition, the abstention summary."""
    lines = [
        heading(screen),
        "",
        f"Machine: {payload['machine']}. Date: {payload['date']}. Produced by `benchmarks/calibration.py` "
        f"(`{payload['command']}`) from saved out-of-fold probabilities (nothing trained). "
        + (f"**Cut** ({payload['cut']}). " if payload["cut"] else "")
        + "Protocol: per recipe, the temperature T applied to fold k's clips (clean or degraded) is fitted by NLL on "
        "the *other* folds' clean out-of-fold predictions (cross-fitted: honest after-figures; 'in-sample' where a "
        "recipe has one clean fold, optimistic), and the shipped T is the fit on every clean fold. ECE (15 bins, "
        "percent) and NLL (nats) before and after, with 95 % speaker-cluster bootstrap CIs and paired CIs for "
        "after - before (the same speaker draw); UAR is unchanged by T. Degraded rows use the folds that have every "
        "condition; the clean row on those folds is their like-for-like baseline.",
        "",
        "Reading: 'after: condition - clean' is a condition's after-ECE minus the same clips' clean after-ECE "
        "(paired): does the clean-fitted T hold there? 'T own' is the T the condition's own predictions would pick "
        "(in-sample, a diagnostic). ECE's bootstrap is biased upwards (a sum of absolute gaps), so an interval can "
        "sit at or above its estimate: the paired intervals are the ones to read. A fold is 4 speakers, so few "
        "folds give rough CIs.",
        "",
        "| recipe | condition | folds | n | UAR | ECE before → after [95 % CI] | ΔECE [95 % CI] | after: condition -"
        " clean [95 % CI] | NLL before → after | T (applied) | T own (in-sample) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for recipe, r in payload["recipes"].items():
        if "skipped" in r:
            lines.append(f"| {recipe} | - | - | - | - | {r['skipped']} | - | - | - | - | - |")
            continue
        rows = [("clean (calibration set)", r["clean"]), *r["conditions"].items()]
        for name, b in rows:
            ts = list(b["fold_temperatures"].values())
            t_applied = f"{min(ts):.2f}" if max(ts) - min(ts) < 0.005 else f"{min(ts):.2f}-{max(ts):.2f}"
            if "temperature" in b:
                t_applied += f" (shipped {b['temperature']:.2f})"
            own = b.get("own_temperature_in_sample")
            folds = ",".join(map(str, b["folds"])) + ("" if b["after"] == "cross-fitted by fold" else " in-sample")
            d, v = b["ece"], b.get("ece_after_vs_clean")
            vs = "-" if v is None else f"{pct(v['diff'], True)} {_ci(v['diff_ci'], True)}"
            lines.append(
                f"| {recipe} | {name} | {folds} | {b['n']} | {pct(b['uar'])} | {ece_cell(b)} | "
                f"{pct(d['diff'], True)} {_ci(d['diff_ci'], True)} | {vs} | {b['nll']['before']:.3f} → "
                f"{b['nll']['after']:.3f} | {t_applied} | {'-' if own is None else f'{own:.2f}'} |"
            )
    th = payload["thresholds"]
    lines += [
        "",
        "Abstention (`abstain_below`): answered share / accuracy on the answered clips (UAR in the JSON) at each "
        "threshold on the calibrated (cross-fitted) top probability; 0 is no abstention.",
        "",
        "| recipe | condition | " + " | ".join(f"{t:g}" for t in th) + " |",
        "|---|---|" + "---|" * len(th),
    ]
    for recipe, r in payload["recipes"].items():
        for name, a in r.get("abstention", {}).items():
            cells = [
                f"{100 * c['coverage']:.0f} % / {pct(c['accuracy'])}" if c["n_answered"] else "0 % / -"
                for c in a["curve"]
            ]
            lines.append(f"| {recipe} | {name} | " + " | ".join(cells) + " |")
    if payload.get("notes"):
        lines += ["", "Notes: " + " ".join(payload["notes"])]
    if payload.get("plot"):
        lines += ["", f"Reliability diagrams and coverage curves: `{payload['plot']}`."]
    return "\n".join(lines) + "\n"


def plot(panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], curves: dict[str, list], path: Path) -> Path:
    """Reliability diagrams (accuracy per confidence bin, before and after scaling) for each ``(title, before,
    after, y)`` panel, and accuracy on the answered clips against coverage for each curve; a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from ser.evaluate import reliability_data

    n = max(len(panels), 2)
    fig = Figure(figsize=(4.2 * n, 9.0))
    grid = fig.add_gridspec(2, n)
    for i, (title, before, after, y) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        for proba, label, colour in ((before, "before", "tab:red"), (after, "after T", "tab:blue")):
            rel = reliability_data(proba, y)
            pts = [(b["confidence"], b["accuracy"], b["count"]) for b in rel["bins"] if b["count"]]
            conf, acc, cnt = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
            ax.plot(conf, acc, "o-", color=colour, label=f"{label}: ECE {100 * rel['ece']:.1f} %")
            ax.scatter(conf, acc, s=4 + 200 * cnt / cnt.sum(), color=colour, alpha=0.3)
        ax.set(title=title.replace(" (", "\n("), xlabel="confidence (top probability)", ylabel="accuracy")
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left", fontsize=8)
    ax = fig.add_subplot(grid[1, : max(n - 1, 1)])
    recipes = list(dict.fromkeys(label.split(", ")[0] for label in curves))
    conds = list(dict.fromkeys(label.split(", ", 1)[-1] for label in curves))
    for label, curve in curves.items():
        recipe, _, cond = label.partition(", ")
        pts = [(c["coverage"], c["accuracy"]) for c in curve if c["n_answered"]]
        style = dict(color=f"C{recipes.index(recipe)}", ls=["-", "--", ":", "-."][conds.index(cond) % 4])
        ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=label, **style)
    ax.set(title="abstention: answered share vs accuracy", xlabel="coverage", ylabel="accuracy on answered clips")
    ax.set(xlim=(0, 1.02), ylim=(0, 1))
    key = fig.add_subplot(grid[1, n - 1])  # the legend in a cell of its own: the curves keep the whole plot
    key.axis("off")
    key.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="center left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_inputs(data: dict[str, dict[str, Any]]) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Reliability panels: the first recipe (the baseline) on its clean calibration set and in factory noise at 10
    dB, then the last one on the telephone and in that noise (of the recipes with clean folds, the conditions that
    exist), each with its clean-fitted per-fold temperatures."""
    panels = []
    names = [recipe for recipe, d in data.items() if d and d["clean"]]
    if not names:
        return panels
    for recipe, want in (
        (names[0], ["clean", "noise-10db:factory1"]),
        (names[-1], ["telephone", "noise-10db:factory1"]),
    )[: min(len(names), 2)]:
        d = data[recipe]
        for name in want:
            folds = d["clean"] if name == "clean" else d["conditions"].get(name, {})
            if not folds:
                continue
            temps, mode = fold_temperatures(d["clean"], sorted(folds))
            p, y, _ = pool(folds)
            tag = "" if mode == "cross-fitted by fold" else ", in-sample T"
            panels.append((f"{recipe}, {name} (folds {','.join(map(str, sorted(folds)))}{tag})", p,
                           scaled(folds, temps), y))  # fmt: skip
    return panels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--robustness-root", type=Path, default=None, help="default: the record's folds, or the screen's (--screen)"
    )
    ap.add_argument(
        "--cv-root",
        action="append",
        default=None,
        metavar="RECIPE=DIR",
        help="a cross-validation run of a recipe (fold_<k>.npz); default cnn=benchmarks/runs/ray_cv/ray/cnn",
    )
    ap.add_argument("--recipes", default=None, help="default: the record's recipes, or the screen's (--screen)")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--thresholds", default=",".join(f"{t:g}" for t in THRESHOLDS))
    ap.add_argument("--abstain-conditions", default=",".join(ABSTAIN_CONDITIONS))
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument(
        "--screen",
        metavar="NAME",
        default=None,
        help="the recipes of robustness screen NAME: calibration_screen_NAME.json and its own section, not the record",
    )
    ap.add_argument("--out", type=Path, default=None, help="results JSON (the PNG goes beside it)")
    ap.add_argument("--no-md", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args(argv)
    if args.screen is None:
        args.out = args.out or RESULTS_JSON
        args.robustness_root = args.robustness_root or ROBUSTNESS_ROOT
        args.recipes = args.recipes or ",".join(RECIPES)
    else:  # the screen's own run: its recipes and its fold folders
        run_file = robustness_screen_json(args.screen)
        if not run_file.is_file():
            raise SystemExit(f"no {run_file}: run benchmarks/robustness.py --screen {args.screen} first")
        run = json.loads(run_file.read_text())
        args.out = args.out or screen_json(args.screen)
        args.robustness_root = args.robustness_root or fold_root(run, run_file)
        args.recipes = args.recipes or ",".join(run["scores"])
    conditions = args.conditions.split(",")
    if conditions[0] != "clean":
        conditions = ["clean", *[c for c in conditions if c != "clean"]]
    if any("=" not in s for s in args.cv_root or []):
        raise SystemExit(f"--cv-root takes RECIPE=DIR, got {args.cv_root}")
    cv_roots = dict(CV_ROOTS) if args.cv_root is None else dict(s.split("=", 1) for s in args.cv_root)
    thresholds = tuple(float(t) for t in args.thresholds.split(","))
    abstain = tuple(args.abstain_conditions.split(","))

    data, recipes, notes = {}, {}, []
    for recipe in args.recipes.split(","):
        cv = cv_roots.get(recipe)
        d = gather(recipe, args.robustness_root, Path(cv) if cv else None, conditions)
        notes += [f"{recipe}: {n}." for n in d["notes"]]
        data[recipe] = d
        if not d["clean"]:
            recipes[recipe] = {"skipped": "no clean fold found"}
            continue
        result = analyse(d["clean"], d["conditions"], thresholds=thresholds, abstain_conditions=abstain,
                         n_boot=args.n_boot)  # fmt: skip
        recipes[recipe] = {
            "clean_folds": sorted(d["clean"]),
            "clean_sources": d["clean_sources"],
            "condition_folds": d["condition_folds"],
            **result,
        }
    cut = []
    for recipe, r in recipes.items():
        n_clean, n_cond = len(r.get("clean_folds", [])), len(r.get("condition_folds", []))
        if n_clean < N_FOLDS or n_cond < N_FOLDS:
            cut.append(f"{recipe}: {n_clean} of {N_FOLDS} clean folds, {n_cond} with every condition")
    png = args.out.with_suffix(".png")
    curves = {
        f"{recipe}, {name}": a["curve"] for recipe, r in recipes.items() for name, a in r.get("abstention", {}).items()
    }
    plot_path = None
    panels = plot_inputs(data)
    if panels or curves:
        plot(panels, curves, png)
        plot_path = png.relative_to(HERE).as_posix() if png.is_relative_to(HERE) else str(png)
    payload = {
        "benchmark": "calibration",
        "cut": "; ".join(cut) or None,
        "command": "benchmarks/calibration.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "inputs": {"robustness_root": str(args.robustness_root), "cv_roots": {k: str(v) for k, v in cv_roots.items()}},
        "n_bins": 15,
        "conditions": conditions,
        "thresholds": list(thresholds),
        "plot": plot_path,
        "notes": notes,
        "recipes": recipes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    if not args.no_md:
        replace_section(heading(args.screen), section(payload, args.screen))
    for recipe, r in recipes.items():
        if "clean" in r:
            c = r["clean"]
            print(f"{recipe} clean folds {c['folds']}: T {c['temperature']:.2f}, ECE {ece_cell(c)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
