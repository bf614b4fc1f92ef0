"""The closed loop on real speech: how much of the accuracy a channel shift takes does one retraining win back?

Usage (the real protocol is the default: the ``cnn`` recipe at its own epochs, 4-fold cross-validation in each
pipeline run; roughly an hour per run on an idle 2-core machine)::

    .venv/bin/python benchmarks/closed_loop.py
    nice -n 10 .venv/bin/python benchmarks/closed_loop.py --recipe cnn-small --epochs 30 --holdout --val-speakers 0

Protocol (RAVDESS-8, the shared copy; every model is trained and registered by the training pipeline,
:func:`ser.pipeline.run`, as ``ser loop run`` runs it, and scored with onnxruntime by :class:`ModelEvaluateJob`):

1. **v1**: the pipeline on clean studio speech of actors 1-16 (one source) → v1, champion.
2. **production** is actors 17-24 through :data:`CONDITION`: *held-out* factory noise (``factory1``, a
   recording :data:`ser.degrade.TRAIN_NOISES` never contains) at 10 dB SNR, then the telephone channel (300-3400 Hz,
   8 kHz, G.711 mu-law); each clip's degradation is seeded by its content hash and the condition
   (``robustness.condition_seed``), so it is the same on every run.
3. **labelled production audio** of actors 17-20 arrives: a second source with ``gate_share: 0.5``; the split
   stage draws one male and one female of them (``register.gate_seed`` 0) as the gate set before splitting, the
   other two train v2 beside actors 1-16 clean. v2's pipeline run registers it; the gate scores v1 and v2 on the
   gate speakers neither trained on and promotes v2 only when the lower end of the 95 % CI of the UAR gain is > 0.
   ``max_group_gap`` is off: two gate speakers (one per gender) measure two people, not a gender gap; the gap is
   reported on actors 21-24 instead.
4. **scored**: v1 and v2 on actors 21-24 (never trained on, never in the gate set) under the production
   condition, and clean (v1's clean UAR is the reference of what the shift took): UAR with 95 % speaker-bootstrap
   CIs, accuracy, the gender gap (max - min of per-gender UAR). **Won back** = (v2 - v1) / (v1 clean - v1) under
   production.

Each step's wall time is recorded. Resumable: the degraded audio is written once (an ignored temp folder,
``benchmarks/runs/closed_loop/audio``; never committed), the pipeline resumes from its stage cache and checkpoints,
and finished steps are kept in ``benchmarks/runs/closed_loop/<tag>/state.json``. Cut options (``--recipe``,
``--epochs``, ``--holdout``: a 1-fold holdout instead of 4-fold cross-validation, so each pipeline run trains
twice; ``--val-speakers 0``: keep the last epoch, as ``cnn-small``'s single early-stopping speaker stopped the
cut models after 2-3 epochs) mark the result "cut". Results: ``benchmarks/results/closed_loop.json`` and the
"Closed loop" section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from _common import HERE, NOISE_DIR, RESULTS_DIR, SHARED, machine, replace_section

RAVDESS = Path(os.environ.get("SER_RAVDESS", SHARED / "ravdess"))
RUNS = HERE / "runs" / "closed_loop"
RESULTS_JSON = RESULTS_DIR / "closed_loop.json"

CONDITION = "noise:factory1@10+telephone"
"""The production condition: held-out noise at the far end, then the telephone channel."""
V1_ACTORS = tuple(range(1, 17))
LABELLED_ACTORS = tuple(range(17, 21))
TEST_ACTORS = tuple(range(21, 25))
GATE_SHARE = 0.5
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
            "07": "disgust", "08": "surprised"}  # fmt: skip


# ---- the data ---------------------------------------------------------------------------------------------------


def actor_files(actors: tuple[int, ...]) -> list[Path]:
    files = [f for a in actors for f in sorted((RAVDESS / f"Actor_{a:02d}").glob("03-01-*"))]
    if not files:
        raise SystemExit(f"no RAVDESS clips of actors {actors[0]}-{actors[-1]} under {RAVDESS} (set SER_RAVDESS)")
    return files


def link_actors(folder: Path, source: Path, actors: tuple[int, ...]) -> Path:
    """``folder/Actor_NN/<clip>`` symlinks to ``source``'s clips of ``actors`` (real folders: the corpus walk does
    not follow linked folders), so a corpus adapter reads just these actors."""
    for a in actors:
        (folder / f"Actor_{a:02d}").mkdir(parents=True, exist_ok=True)
        for f in sorted((source / f"Actor_{a:02d}").glob("03-01-*")):
            link = folder / f.parent.name / f.name
            if not link.is_symlink():
                link.symlink_to(f.resolve())
    return folder


def degrade_actors(folder: Path, actors: tuple[int, ...], condition: str) -> Path:
    """Every clip of ``actors`` through ``condition`` (seeded per clip) → ``folder`` in RAVDESS layout; clips
    already written are kept (resumable)."""
    import soundfile as sf

    from robustness import condition_seed
    from ser import TARGET_SR, degrade
    from ser.audio import load_audio
    from ser.progress import track

    files = actor_files(actors)
    todo = [f for f in files if not (folder / f.parent.name / (f.stem + ".flac")).is_file()]
    for f in track(todo, f"degrade {len(todo)} clips", len(todo), True):
        y = load_audio(str(f), TARGET_SR)
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        out = degrade.apply(y, TARGET_SR, condition, condition_seed(sha, condition), noises=NOISE_DIR)
        target = folder / f.parent.name / (f.stem + ".flac")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.stem + ".part.flac")
        sf.write(tmp, out, TARGET_SR, subtype="PCM_16")
        tmp.replace(target)
    return folder


def manifest(folder: Path, actors: tuple[int, ...]) -> pd.DataFrame:
    """A labelled manifest (path, emotion, speaker, gender) of ``actors``' clips under ``folder``."""
    rows = []
    for a in actors:
        for f in sorted((folder / f"Actor_{a:02d}").glob("03-01-*")):
            rows.append(
                {
                    "path": str(f),
                    "emotion": EMOTIONS[f.name.split("-")[2]],
                    "speaker": f"ravdess:{a}",
                    "gender": "male" if a % 2 else "female",
                }
            )
    return pd.DataFrame(rows)


# ---- the pipeline runs ------------------------------------------------------------------------------------------


def pipeline_config(args: argparse.Namespace, studio: Path, phone: Path | None) -> dict[str, Any]:
    sources: list[dict[str, Any]] = [{"name": "studio", "corpus": "ravdess", "path": str(studio)}]
    if phone is not None:
        sources.append({"name": "phone", "corpus": "ravdess", "path": str(phone), "gate_share": GATE_SHARE})
    split: dict[str, Any] = {"method": "kfold", "k": 4}
    if args.holdout:
        split = {"method": "holdout", "test_fraction": 0.25}
    train: dict[str, Any] = {"model": args.recipe, "threads": args.threads}
    overrides: dict[str, Any] = {}
    if args.epochs:
        overrides["train"] = {"epochs": args.epochs}
    if args.val_speakers is not None:
        overrides["val_speakers"] = args.val_speakers
    if overrides:
        train["overrides"] = overrides
    return {
        "data": {"profile": "ravdess8", "sources": sources},
        "split": split,
        "train": train,
        "evaluate": {"n_boot": args.n_boot},
        "register": {"max_group_gap": None, "n_boot": args.n_boot, "rule": "ci"},
        "tracking": {"enabled": False},
        "workers": args.workers,
    }


def run_pipeline(cfg: dict[str, Any], workdir: Path) -> Any:
    """One run of the training pipeline (what ``ser loop run`` retrains with) → its RunSummary."""
    from ser.pipeline import parse_config, run

    summary = run(parse_config(cfg), workdir)
    if not summary.ok:
        failed = [s for s in summary.to_dict()["stages"] if s.get("status") == "failed"]
        raise SystemExit(f"pipeline failed: {failed}")
    return summary


def evaluate(model_dir: Path, frame: pd.DataFrame, n_boot: int, threads: int) -> dict[str, Any]:
    from ser.jobs.evaluate import ModelEvaluateJob

    ev = ModelEvaluateJob(model_dir, frame, None, n_boot=n_boot, threads=threads, progress=True).run()
    s = ev.summary("gender")
    groups = ev.evaluation["fairness"]["attributes"].get("gender", {}).get("groups", [])
    return {
        "n": s["n"],
        "speakers": s["speakers"],
        "uar": s["uar"],
        "uar_ci": [s["ci"]["uar"]["low"], s["ci"]["uar"]["high"]] if s["ci"] else None,
        "accuracy": s["accuracy"],
        "gender_uar": {g["group"]: g["uar"] for g in groups},
        "gender_gap": s["group_gap"],
    }


# ---- the steps --------------------------------------------------------------------------------------------------


class State:
    """Finished steps (results and wall times) in ``state.json``: a rerun skips them."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def step(self, name: str, fn: Any) -> Any:
        if name in self.data:
            print(f"[{name}] done before ({self.data[name]['wall_s']:.0f} s)", flush=True)
            return self.data[name]["result"]
        print(f"[{name}] ...", flush=True)
        t0 = time.perf_counter()
        result = fn()
        self.data[name] = {"result": result, "wall_s": time.perf_counter() - t0}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, default=str))
        print(f"[{name}] {self.data[name]['wall_s']:.0f} s", flush=True)
        return result


def decision_of(summary: Any) -> dict[str, Any]:
    """The register stage's decision of a RunSummary."""
    r = summary.to_dict()["result"]
    gate = r.get("gate") or {}
    return {
        "version": r["version"],
        "alias": r["alias"],
        "reason": r["reason"],
        "outcome": gate.get("outcome"),
        "gate_n": (gate.get("gate") or {}).get("n_unseen"),
        "candidate_gate_uar": (gate.get("candidate_score") or {}).get("uar"),
        "champion_gate_uar": (gate.get("champion_score") or {}).get("uar"),
        "gate_uar_diff": gate.get("uar_diff"),
    }


def gate_speakers(summary: Any) -> list[str]:
    """The speakers the split stage set aside as the gate set."""
    from ser.io import read_parquet

    return sorted(set(read_parquet(summary.record("split")["outputs"]["gate"])["speaker"].astype(str)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="cnn", help="training recipe (cut: cnn-small)")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (a cut run)")
    ap.add_argument("--holdout", action="store_true", help="1-fold holdout instead of 4-fold CV (a cut run)")
    ap.add_argument(
        "--val-speakers",
        type=int,
        default=None,
        help="early-stopping speakers (recipe override; 0: keep the last epoch)",
    )
    ap.add_argument("--condition", default=CONDITION)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args(argv)
    from robustness import check_test_condition

    check_test_condition(args.condition)
    cut = args.recipe != "cnn" or bool(args.epochs) or args.holdout
    opts = [args.recipe, args.epochs, args.holdout, args.condition]
    tag = hashlib.sha256(json.dumps(opts + ([args.val_speakers] if args.val_speakers is not None else [])).encode())
    root = RUNS / tag.hexdigest()[:12]
    workdir = root / "wd"
    state = State(root / "state.json")
    audio = RUNS / "audio" / hashlib.sha256(args.condition.encode()).hexdigest()[:12]

    def prepare() -> dict[str, Any]:
        degrade_actors(audio, LABELLED_ACTORS + TEST_ACTORS, args.condition)
        return {"degraded_clips": len(actor_files(LABELLED_ACTORS + TEST_ACTORS))}

    state.step("degrade", prepare)
    studio = link_actors(root / "studio", RAVDESS, V1_ACTORS)
    phone = link_actors(root / "phone", audio, LABELLED_ACTORS)  # the labelled production audio: actors 17-20

    v1 = state.step("v1", lambda: decision_of(run_pipeline(pipeline_config(args, studio, None), workdir)))

    def retrain() -> dict[str, Any]:
        summary = run_pipeline(pipeline_config(args, studio, phone), workdir)
        return {**decision_of(summary), "gate_speakers": gate_speakers(summary)}

    v2 = state.step("v2", retrain)
    from ser.registry import resolve

    prod = manifest(audio, TEST_ACTORS)
    clean = manifest(RAVDESS, TEST_ACTORS)
    scores = {}
    cv_uar = {}
    for version in (v1["version"], v2["version"]):
        folder = resolve(workdir, f"ser-emotion/{version}")
        cv_uar[version] = json.loads((folder / "metadata.json").read_text()).get("evaluation", {}).get("uar")
        for name, frame in (("production", prod), ("clean", clean)):
            key = f"score v{version} {name}"
            scores[key] = state.step(key, lambda f=folder, m=frame: evaluate(f, m, args.n_boot, args.threads))
    a1, a2 = scores[f"score v{v1['version']} production"], scores[f"score v{v2['version']} production"]
    c1 = scores[f"score v{v1['version']} clean"]
    lost = c1["uar"] - a1["uar"]
    result = {
        "benchmark": "closed_loop",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "cut": cut,
        "protocol": {
            "corpus": "RAVDESS-8 (shared copy)",
            "v1_actors": "1-16 clean",
            "labelled_actors": "17-20 under the production condition (gate_share 0.5)",
            "gate_speakers": v2["gate_speakers"],
            "test_actors": "21-24 (never trained on, never in the gate set)",
            "condition": args.condition,
            "recipe": args.recipe,
            "epochs": args.epochs or "recipe default",
            "val_speakers": "recipe default" if args.val_speakers is None else args.val_speakers,
            "split": "holdout (1 fold)" if args.holdout else "kfold k=4",
            "register": {"rule": "ci", "margin": 0.0, "max_group_gap": None},
            "n_boot": args.n_boot,
        },
        "v1": {**v1, "cv_uar": cv_uar[v1["version"]], "production": a1, "clean": c1},
        "v2": {
            **v2,
            "cv_uar": cv_uar[v2["version"]],
            "production": a2,
            "clean": scores[f"score v{v2['version']} clean"],
        },
        "lost_uar": lost,
        "won_back_uar": a2["uar"] - a1["uar"],
        # a share of a loss that the clean CI does not separate from nothing is no figure
        "won_back_share": (a2["uar"] - a1["uar"]) / lost if c1["uar_ci"] and a1["uar"] < c1["uar_ci"][0] else None,
        "promoted": v2["alias"] == "champion",
        "wall_s": {k: v["wall_s"] for k, v in state.data.items()},
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(result, indent=2, default=str) + "\n")
    replace_section("## Closed loop", section(result))
    print(json.dumps({k: result[k] for k in ("lost_uar", "won_back_uar", "won_back_share")}, indent=2))
    return 0


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _score_cell(s: dict[str, Any]) -> str:
    ci = s.get("uar_ci")
    ci_txt = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""
    return f"{_pct(s['uar'])}{ci_txt} | {_pct(s['gender_gap'])}"


def section(r: dict[str, Any]) -> str:
    p = r["protocol"]
    cut = " **(cut run)**" if r["cut"] else ""
    lines = [
        "## Closed loop: a channel shift and one retraining (RAVDESS-8)",
        "",
        f"`benchmarks/closed_loop.py`{cut}, {r['date']}, {r['machine']}. Recipe `{p['recipe']}`, epochs "
        f"{p['epochs']}, split {p['split']}; production condition `{p['condition']}` (held-out noise, then the "
        "telephone channel). v1: actors 1-16 clean. v2: the same plus labelled production audio of actors 17-20, "
        f"of which {', '.join(p['gate_speakers'])} were drawn as the gate set (never trained on). Scored with "
        "onnxruntime on actors 21-24 (never trained on, never in the gate set); UAR % with 95 % speaker-bootstrap "
        "CI; gender gap = max - min per-gender UAR (points).",
        "",
        "| model | production UAR [95 % CI] | gender gap | clean UAR [95 % CI] | gender gap |",
        "|---|---|---|---|---|",
    ]
    for k in ("v1", "v2"):
        m = r[k]
        lines.append(f"| {k} (registry v{m['version']}) | {_score_cell(m['production'])} | {_score_cell(m['clean'])} |")
    v2 = r["v2"]
    diff = v2.get("gate_uar_diff") or {}
    lines += [
        "",
        f"- The shift took {_pct(r['lost_uar'])} points of v1's UAR (clean → production); v2 scores "
        f"{_pct(r['won_back_uar'])} points above v1 there, "
        + (
            f"**{_pct(r['won_back_share'])} %** of the loss"
            if r["won_back_share"] is not None
            else "no share of the loss computed (v1's production UAR is within the 95 % CI of its clean UAR)"
        )
        + (
            "."
            if r["promoted"]
            else " — but the gate did not promote it, so production keeps v1 and this pass of the loop won back "
            "nothing."
        ),
        f"- The gate: v2 → **{v2['alias']}** ({v2['outcome']}) on {v2['gate_n']} gate utterances: v2 "
        f"{_pct(v2['candidate_gate_uar'])} % vs v1 {_pct(v2['champion_gate_uar'])} % UAR, gain "
        f"{_pct(diff.get('diff'))} [{_pct(diff.get('low'))}, {_pct(diff.get('high'))}].",
        f"- Cross-validated UAR of the pipeline runs (their own holdout speakers): v1 {_pct(r['v1'].get('cv_uar'))} %, "
        f"v2 {_pct(r['v2'].get('cv_uar'))} %."
        + (
            " A cut run trains far weaker models than the full recipe: read its figures as a check that the "
            "protocol runs end to end, not as the size of the loop's effect."
            if r["cut"]
            else ""
        ),
        "- Wall time per step (s): " + ", ".join(f"{k} {v:.0f}" for k, v in r["wall_s"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
