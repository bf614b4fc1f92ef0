"""Trimming in noise: the level trim (``trim: level``) vs the voice-activity trim (``trim: vad``) on real RAVDESS
clips mixed with the held-out noise recordings.

Usage::

    nice -n 19 .venv/bin/python benchmarks/trim_vad.py                 # actors 1-4 (240 clips), ~2 min on 2 cores
    nice -n 19 .venv/bin/python benchmarks/trim_vad.py --actors 1 --sweep-actors 5   # a cut run

Protocol. Report: RAVDESS actors 1-4 (the test actors of ``benchmarks/robustness.py``'s fold 0), each clip clean
and through the *held-out* noises (factory1, icra5_speechlike; never drawn in training) at 10 and 0 dB SNR, mixed
exactly as ``benchmarks/robustness.py`` mixes them (:func:`robustness.degrade_clip`, the same per-clip seeds).
Per clip and trim mode (:func:`ser.model_folder.input_bounds`, ``trim_db`` 40, the recipes' value):

- ``kept``: the share of the clip's frames the trim keeps;
- ``iou_self``: IoU of the kept span with the span the same trim keeps on the clean clip (is it stable under noise);
- ``iou_level``: IoU with the clean clip's *level*-trim span (the reference of the earlier finding in
  ``benchmarks/RESULTS.md``, "level trim keeps (IoU with clean span)");
- ``recall``: the share of the clean level span the trim keeps (speech it would lose is 1 - recall);
- for ``vad``, how many clips found no voiced frame and fell back to the level trim.

Means with 95 % percentile-bootstrap CIs over clips (2000 resamples, seed 0). Choosing the VAD settings: a sweep of
webrtcvad modes 0-3 and 10 / 30 ms frames on other actors (5-6) and the *training* noises (babble, pink, volvo_car),
so the setting in :data:`ser.features.VAD_TRIM` is not chosen on the noises or clips it is reported on.
Results: ``benchmarks/results/trim_vad.json`` and the "Trimming in noise" section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import RESULTS_DIR, machine, replace_section
from robustness import NOISE_DIR, RAVDESS, check_test_condition, degrade_clip

RESULTS_JSON = RESULTS_DIR / "trim_vad.json"
TEST_CONDITIONS = (
    "clean",
    "noise-10db:factory1",
    "noise-0db:factory1",
    "noise-10db:icra5_speechlike",
    "noise-0db:icra5_speechlike",
)
"""Reported conditions: the held-out noise recordings at 10 and 0 dB SNR."""
SWEEP_CONDITIONS = ("noise-10db:babble", "noise-0db:babble", "noise-10db:pink", "noise-0db:volvo_car")
"""Conditions the VAD settings are chosen on: training noises only."""
SWEEP = [{"aggressiveness": a, "frame_ms": f, "min_level_db": -50.0} for a in (0, 1, 2, 3) for f in (10, 30)]
TRIM_DB = 40.0
MODES = ("level", "vad")
N_BOOT = 2000


# ---- pure parts ------------------------------------------------------------------------------------------------


def span_mask(n: int, bounds: tuple[int, int]) -> np.ndarray:
    """Boolean ``(n,)`` mask of the frames ``[lo, hi)``."""
    m = np.zeros(n, dtype=bool)
    m[bounds[0] : bounds[1]] = True
    return m


def overlap(kept: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """``(share kept, IoU with ref, share of ref kept)`` of two boolean frame masks of equal length."""
    inter, union = float((kept & ref).sum()), float((kept | ref).sum())
    return float(kept.mean()), inter / max(1.0, union), inter / max(1.0, float(ref.sum()))


def mean_ci(values: list[float] | np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, float]:
    """Mean and 95 % percentile-bootstrap CI over the values (clips)."""
    v = np.asarray(values, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))
    low, high = np.quantile(v[idx].mean(axis=1), [0.025, 0.975])
    return {"mean": float(v.mean()), "low": float(low), "high": float(high)}


def trim_bounds_of(feats: dict[str, np.ndarray], mode: str) -> tuple[tuple[int, int], bool]:
    """``(bounds, fell back)`` of one trim mode on one clip's ``logmel`` + ``vad`` frames."""
    from ser.model_folder import input_bounds, vad_bounds

    fell_back = mode == "vad" and vad_bounds(feats["vad"]) is None
    return input_bounds(feats, mode, TRIM_DB), fell_back


# ---- the run ---------------------------------------------------------------------------------------------------


def clips(actors: list[int]) -> list[tuple[str, Path, str]]:
    """``(utt_id, path, sha256)`` of every RAVDESS clip of ``actors``."""
    from ser.audio import sha256_file

    out = []
    for a in actors:
        for path in sorted((RAVDESS / f"Actor_{a:02d}").glob("*.flac")):
            out.append((path.stem, path, sha256_file(path)))
    if not out:
        raise SystemExit(f"no RAVDESS clips for actors {actors} under {RAVDESS}")
    return out


def measure(rows, conditions) -> dict[str, Any]:
    """Per condition and trim mode, the per-clip measures (lists over clips)."""
    from ser.audio import load_audio
    from ser.features import FeatureConfig
    from ser.features.frames import compute

    cfg = FeatureConfig()
    per: dict[str, dict[str, dict[str, list]]] = {
        c: {m: {"kept": [], "iou_self": [], "iou_level": [], "recall": [], "fallback": []} for m in MODES}
        for c in conditions
    }
    for _utt, path, sha in rows:
        y = load_audio(path, cfg.sr)
        clean = compute(y, cfg, ("logmel", "vad"))
        n = clean["logmel"].shape[1]
        ref = {m: span_mask(n, trim_bounds_of(clean, m)[0]) for m in MODES}
        for c in conditions:
            feats = (
                clean if c == "clean" else compute(degrade_clip(y, cfg.sr, sha, c, NOISE_DIR), cfg, ("logmel", "vad"))
            )
            for m in MODES:
                bounds, fell_back = trim_bounds_of(feats, m)
                kept = span_mask(n, bounds)
                share, iou_level, recall = overlap(kept, ref["level"])
                cell = per[c][m]
                cell["kept"].append(share)
                cell["iou_self"].append(overlap(kept, ref[m])[1])
                cell["iou_level"].append(iou_level)
                cell["recall"].append(recall)
                cell["fallback"].append(float(fell_back))
    return per


def summarise(per) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c, modes in per.items():
        out[c] = {}
        for m, cell in modes.items():
            out[c][m] = {k: mean_ci(v) for k, v in cell.items() if k != "fallback"}
            out[c][m]["fallback_clips"] = int(sum(cell["fallback"]))
    return out


def sweep(rows, conditions) -> list[dict[str, Any]]:
    """Each VAD setting of :data:`SWEEP` on the training-noise conditions: mean IoU with the clean level span and
    mean recall, pooled over conditions and clips (bounds as :func:`ser.model_folder.input_bounds` takes them)."""
    from ser.audio import load_audio
    from ser.features import FeatureConfig
    from ser.features.frames import compute, voice
    from ser.model_folder import input_bounds

    cfg = FeatureConfig()
    scores: dict[int, dict[str, list[float]]] = {
        i: {"iou_level": [], "recall": [], "kept": []} for i in range(len(SWEEP))
    }
    for _utt, path, sha in rows:
        y = load_audio(path, cfg.sr)
        lm = compute(y, cfg, ("logmel",))["logmel"]
        n = lm.shape[1]
        ref = span_mask(n, input_bounds({"logmel": lm}, "level", TRIM_DB))
        for c in conditions:
            x = degrade_clip(y, cfg.sr, sha, c, NOISE_DIR)
            noisy_lm = compute(x, cfg, ("logmel",))["logmel"]
            for i, setting in enumerate(SWEEP):
                feats = {"logmel": noisy_lm, "vad": voice(x, cfg.sr, hop_length=cfg.hop_length, vad=setting)}
                share, iou, recall = overlap(span_mask(n, input_bounds(feats, "vad", TRIM_DB)), ref)
                scores[i]["iou_level"].append(iou)
                scores[i]["recall"].append(recall)
                scores[i]["kept"].append(share)
    return [{**SWEEP[i], **{k: mean_ci(v) for k, v in s.items()}} for i, s in scores.items()]


def pct(ci: dict[str, float], digits: int = 0) -> str:
    return f"{100 * ci['mean']:.{digits}f} [{100 * ci['low']:.{digits}f}, {100 * ci['high']:.{digits}f}]"


def dec(ci: dict[str, float]) -> str:
    return f"{ci['mean']:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]"


def render(payload: dict[str, Any]) -> str:
    from ser.features import VAD_TRIM
    from ser.model_folder import VAD_MIN_RUN_FRAMES, VAD_PAD_FRAMES

    r = payload["results"]
    lines = [
        "## Trimming in noise: level trim vs voice-activity trim (RAVDESS, held-out noises)",
        "",
        f"Machine: {payload['machine']}. Date: {payload['date']}. Produced by `benchmarks/trim_vad.py` "
        f"(`{payload['command']}`), {payload['seconds']:.0f} s. Clips: RAVDESS actors "
        f"{', '.join(map(str, payload['actors']))} ({payload['n_clips']} clips), each clean and mixed with the "
        "held-out noise recordings (factory1, icra5_speechlike) at 10 and 0 dB SNR as `benchmarks/robustness.py` "
        f"mixes them. `level`: frames within {TRIM_DB:g} dB of the loudest (every model until now); `vad`: first to "
        f"last run of >= {VAD_MIN_RUN_FRAMES} webrtcvad-voiced frames, ± {VAD_PAD_FRAMES} frames ({VAD_TRIM}), the "
        "level trim when there is none. "
        "Mean over clips [95 % bootstrap CI over clips]. kept: share of the clip's frames kept; IoU self: with the "
        "span the same trim keeps on the clean clip; IoU level: with the clean clip's level-trim span (the earlier "
        "finding's reference); recall: share of that clean span kept.",
        "",
        "| condition | trim | kept % | IoU self | IoU level | recall % | VAD fell back |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, modes in r.items():
        for m, s in modes.items():
            fb = f"{s['fallback_clips']} / {payload['n_clips']}" if m == "vad" else "-"
            lines.append(
                f"| {c} | {m} | {pct(s['kept'])} | {dec(s['iou_self'])} | {dec(s['iou_level'])} | "
                f"{pct(s['recall'])} | {fb} |"
            )
    sw = payload["sweep"]
    lines += [
        "",
        f"How the VAD setting was chosen: webrtcvad modes 0-3 on 10 / 30 ms frames, on other clips (actors "
        f"{', '.join(map(str, payload['sweep_actors']))}, {payload['sweep_clips']} clips) and the *training* noises "
        f"({', '.join(SWEEP_CONDITIONS)}), pooled:",
        "",
        "| mode | frame ms | kept % | IoU level | recall % |",
        "|---|---|---|---|---|",
    ]
    for s in sw:
        lines.append(
            f"| {s['aggressiveness']} | {s['frame_ms']} | {pct(s['kept'])} | {dec(s['iou_level'])} | "
            f"{pct(s['recall'])} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--sweep-actors", type=int, nargs="+", default=[5, 6])
    ap.add_argument("--no-write", action="store_true", help="print, do not write the JSON / RESULTS.md")
    args = ap.parse_args(argv)
    for c in TEST_CONDITIONS[1:]:
        check_test_condition(c)
    if set(args.actors) & set(args.sweep_actors):
        raise SystemExit("the sweep's actors must differ from the reported ones")
    start = time.perf_counter()
    rows = clips(args.actors)
    sweep_rows = clips(args.sweep_actors)
    results = summarise(measure(rows, TEST_CONDITIONS))
    swept = sweep(sweep_rows, SWEEP_CONDITIONS)
    payload = {
        "machine": machine(),
        "date": dt.date.today().isoformat(),
        "command": "benchmarks/trim_vad.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "seconds": time.perf_counter() - start,
        "actors": args.actors,
        "n_clips": len(rows),
        "sweep_actors": args.sweep_actors,
        "sweep_clips": len(sweep_rows),
        "trim_db": TRIM_DB,
        "conditions": list(TEST_CONDITIONS),
        "results": results,
        "sweep_conditions": list(SWEEP_CONDITIONS),
        "sweep": swept,
    }
    text = render(payload)
    print(text)
    if not args.no_write:
        RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_JSON.write_text(json.dumps(payload, indent=2) + "\n")
        replace_section("## Trimming in noise", text)


if __name__ == "__main__":
    main()
