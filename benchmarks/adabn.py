"""Target-domain adaptation by AdaBN on a real cross-corpus pair: RAVDESS-trained cnn models scored on EmoDB.

Models: the six ``cnn`` fold models of the RAVDESS-8 cross-validation (``ravdess6`` folds, 20 actors each; the
``best.pt`` checkpoints of ``benchmarks/ray_cv.py``'s Ray path, read from ``--ckpt-root``), each exported as a model
folder exactly as the release path does (:func:`ser.export.write_model_folder`: log-mel input, level trim 40 dB,
BatchNormalization nodes kept). Nothing is trained.

Test: EmoDB (``emodb/wav``; this copy is cut or zero-padded to 2.0 s, see the data README: numbers are not
comparable with published EmoDB results) restricted to the four classes both corpora share — anger → angry,
happiness → happy, neutral, sadness → sad; the prediction is the arg-max among the model's probabilities of those
four of its eight classes.

Adaptation (``ser model adapt --method batchnorm``, :func:`ser.adabn.adapt_batchnorm` on the clips' served model
inputs, :func:`ser.jobs.adapt.clip_graph_input`): honest 2-fold over EmoDB speakers — the ten speakers in sorted
order split into every other one (03 09 11 13 15 | 08 10 12 14 16, both halves of mixed gender); the batch-norm
statistics are estimated on *all* clips (all seven emotions, labels unused) of one half and the other half's
four-class clips are scored, then swapped, so no scored clip was seen by its adaptation. ``transductive`` (secondary):
adapted on all 535 EmoDB clips, the scored ones included.

Control on the source domain: for fold ``k``, AdaBN on the unlabelled clips of four of its *training* actors (fold
``k+1``'s test actors) and the fold's own four test actors scored over the eight RAVDESS classes before and after
(how much re-estimating the statistics on clean full-length source clips moves a model whose running statistics were
averaged over augmented training crops).

Reported per fold model and for the six models' ensemble (mean probability): 4-class UAR with 95 % speaker-bootstrap
CIs (10 speakers, :func:`ser.evaluate.metrics.bootstrap_ci`) before and after, and the paired speaker-bootstrap
difference (:func:`ser.evaluate.metrics.paired_bootstrap_diff`). Inference only, onnxruntime on ``--threads`` (1).

Usage::

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python benchmarks/adabn.py [--folds 0 1 2 3 4 5] [--no-write]

Writes ``benchmarks/results/adabn.json`` and the "Target-domain adaptation (AdaBN)" section of
``benchmarks/RESULTS.md``; exported folders go to ``benchmarks/runs/adabn`` (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import HERE, RESULTS_DIR, SHARED, machine, replace_section

RESULTS_JSON = RESULTS_DIR / "adabn.json"
HEADING = "## Target-domain adaptation (AdaBN)"
EMODB = Path(os.environ.get("SER_EMODB", SHARED / "emodb"))
CKPT_ROOT = Path(os.environ.get("SER_ADABN_CKPTS", HERE.parent.parent / "main/benchmarks/runs/ray_cv/ray/cnn"))
RUNS = HERE / "runs" / "adabn"
EMODB_4 = {"W": "angry", "F": "happy", "N": "neutral", "T": "sad"}
"""EmoDB emotion letters of the four shared classes → the RAVDESS-8 label."""
CLASSES = ["angry", "happy", "neutral", "sad"]


def emodb_clips(root: Path) -> list[dict[str, Any]]:
    """Every EmoDB file: path, speaker (the name's first two digits), and the 4-class label or None."""
    files = sorted((root / "wav").glob("*.flac")) or sorted(root.rglob("*.wav"))
    if not files:
        raise SystemExit(f"no EmoDB audio under {root}")
    return [{"path": f, "speaker": f.name[:2], "label": EMODB_4.get(f.name[5])} for f in files]


RAVDESS = Path(os.environ.get("SER_RAVDESS", SHARED / "ravdess"))


def ravdess_actors(actors: list[int]) -> list[dict[str, Any]]:
    """RAVDESS speech files of ``actors``: path, actor, 8-class label (the name's emotion code)."""
    from ser.data.labels import get_profile

    codes = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
             "07": "disgust", "08": "surprised"}  # fmt: skip
    assert set(codes.values()) == set(get_profile("ravdess8").classes)
    out = []
    for a in actors:
        for f in sorted((RAVDESS / f"Actor_{a:02d}").glob("*.flac")):
            out.append({"path": f, "speaker": f"{a:02d}", "label": codes[f.name.split("-")[2]]})
    return out


def source_control(k: int, folder: Path, pre: Any, threads: int) -> dict[str, Any]:
    """AdaBN of fold ``k``'s model on four of its training actors; its four test actors scored before / after."""
    import onnx

    from ser.adabn import adapt_batchnorm
    from ser.evaluate.metrics import paired_bootstrap_diff, uar_score
    from ser.jobs.adapt import clip_graph_input
    from ser.model_folder import INPUT_NAME, MODEL_FILE, read_metadata

    labels = list(read_metadata(folder)["labels"])
    test_actors = list(range(4 * k + 1, 4 * k + 5))
    adapt_actors = list(range(4 * ((k + 1) % 6) + 1, 4 * ((k + 1) % 6) + 5))
    test, adapt = ravdess_actors(test_actors), ravdess_actors(adapt_actors)
    tb = [clip_graph_input(c["path"], pre) for c in test]
    ab = [clip_graph_input(c["path"], pre) for c in adapt]
    test = [c for c, r in zip(test, tb, strict=True) if not isinstance(r, str)]
    tb = [r[0] for r in tb if not isinstance(r, str)]
    ab = [r[0] for r in ab if not isinstance(r, str)]
    graph = onnx.load(str(folder / MODEL_FILE))
    adapted, layers = adapt_batchnorm(graph, ab, input_name=INPUT_NAME)
    before, after = _scores(graph, tb, threads).argmax(1), _scores(adapted, tb, threads).argmax(1)
    y = np.array([labels.index(c["label"]) for c in test])
    spk = np.array([c["speaker"] for c in test])
    d = paired_bootstrap_diff(y, after, before, spk, classes=list(range(len(labels))), n_boot=2000, seed=0)["uar"]
    return {
        "test_actors": test_actors,
        "adapted_on_actors": adapt_actors,
        "clips_scored": len(test),
        "clips_adapted": len(ab),
        "uar_before": float(uar_score(y, before)),
        "uar_after": float(uar_score(y, after)),
        "diff": {"diff": d["diff"], "low": d["low"], "high": d["high"]},
        "agreement": float(np.mean(before == after)),
        "mean_shift_sd": float(np.mean([la["mean_shift_sd"] for la in layers])),
    }


def export_fold(k: int, ckpt_root: Path) -> Path:
    """The fold-``k`` checkpoint as a model folder (reused when already exported with its batch norms)."""
    from ser.adabn import has_batchnorm
    from ser.data.labels import get_profile
    from ser.export import write_model_folder
    from ser.features import FeatureConfig
    from ser.model_folder import MODEL_FILE
    from ser.models.factory import load_model

    out = RUNS / f"fold_{k}"
    if (out / MODEL_FILE).is_file() and has_batchnorm(out / MODEL_FILE):
        return out
    model, _ = load_model(ckpt_root / f"fold_{k}_ckpt" / "best.pt")
    return write_model_folder(
        out,
        model,
        labels=get_profile("ravdess8").classes,
        feature_config=FeatureConfig(),
        kind="logmel",
        trim="level",
        trim_db=40.0,
        extra={"name": f"ravdess-cnn-fold{k}"},
    )


def _scores(graph: Any, batches: list[np.ndarray], threads: int) -> np.ndarray:
    """Logits ``(n, n_classes)`` of one graph (an onnx.ModelProto) over graph input batches (mean over a batch)."""
    import onnxruntime as ort

    from ser.model_folder import INPUT_NAME, OUTPUT_NAME

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    s = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return np.stack([s.run([OUTPUT_NAME], {INPUT_NAME: b})[0].mean(axis=0) for b in batches])


def four_class(logits: np.ndarray, labels: list[str]) -> np.ndarray:
    """The arg-max among the four shared classes' probabilities (= among their logits), as indices into
    :data:`CLASSES`. ``logits`` ``(n, n_classes)``."""
    idx = [labels.index(c) for c in CLASSES]
    return np.asarray(logits)[:, idx].argmax(axis=1)


def softmax4(logits: np.ndarray, labels: list[str]) -> np.ndarray:
    """Probabilities over the model's classes ``(n, n_classes)``, then the four shared ones ``(n, 4)``."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    return p[:, [labels.index(c) for c in CLASSES]]


def measure(folds: list[int], ckpt_root: Path, threads: int) -> dict[str, Any]:
    import onnx

    from ser.adabn import adapt_batchnorm
    from ser.evaluate.metrics import bootstrap_ci, paired_bootstrap_diff, uar_score
    from ser.jobs.adapt import clip_graph_input
    from ser.model_folder import INPUT_NAME, MODEL_FILE, Preprocessing, read_metadata

    folders = [export_fold(k, ckpt_root) for k in folds]
    meta = read_metadata(folders[0])
    labels = list(meta["labels"])
    pre = Preprocessing.from_metadata(meta)
    clips = emodb_clips(EMODB)
    t0 = time.perf_counter()
    inputs = [clip_graph_input(c["path"], pre) for c in clips]
    bad = [(c["path"].name, r) for c, r in zip(clips, inputs, strict=True) if isinstance(r, str)]
    if bad:
        raise SystemExit(f"unusable EmoDB clips: {bad[:3]}")
    batches = [r[0] for r in inputs if not isinstance(r, str)]
    seconds = [r[1] for r in inputs if not isinstance(r, str)]
    print(f"{len(clips)} EmoDB clips through the serving features in {time.perf_counter() - t0:.0f} s", flush=True)

    speakers = sorted({c["speaker"] for c in clips})
    halves = [speakers[0::2], speakers[1::2]]
    scored = [i for i, c in enumerate(clips) if c["label"] is not None]
    y = np.array([CLASSES.index(clips[i]["label"]) for i in scored])
    spk = np.array([clips[i]["speaker"] for i in scored])

    per_fold: list[dict[str, Any]] = []
    p_before, p_after, p_trans = [], [], []
    for k, folder in zip(folds, folders, strict=True):
        t1 = time.perf_counter()
        graph = onnx.load(str(folder / MODEL_FILE))
        before = _scores(graph, [batches[i] for i in scored], threads)
        after = np.zeros_like(before)
        layers = []
        for half in halves:
            adapt_idx = [i for i, c in enumerate(clips) if c["speaker"] in half]
            adapted, summary = adapt_batchnorm(graph, [batches[i] for i in adapt_idx], input_name=INPUT_NAME)
            rows = [j for j, i in enumerate(scored) if clips[i]["speaker"] not in half]
            after[rows] = _scores(adapted, [batches[scored[j]] for j in rows], threads)
            layers.append({"adapted_on": half, "clips": len(adapt_idx), "layers": summary})
        trans_graph, trans_layers = adapt_batchnorm(graph, batches, input_name=INPUT_NAME)
        trans = _scores(trans_graph, [batches[i] for i in scored], threads)
        pb, pa, pt = four_class(before, labels), four_class(after, labels), four_class(trans, labels)
        p_before.append(softmax4(before, labels))
        p_after.append(softmax4(after, labels))
        p_trans.append(softmax4(trans, labels))
        row = _rows(y, pb, pa, pt, spk, bootstrap_ci, paired_bootstrap_diff)
        row.update(fold=k, seconds=round(time.perf_counter() - t1, 1), adaptation=layers)
        row["transductive_layers_mean_shift_sd"] = float(np.mean([la["mean_shift_sd"] for la in trans_layers]))
        row["source_control"] = source_control(k, folder, pre, threads)
        per_fold.append(row)
        print(
            f"fold {k}: UAR {100 * uar_score(y, pb):.1f} → {100 * uar_score(y, pa):.1f} % "
            f"(transductive {100 * uar_score(y, pt):.1f} %); RAVDESS control 8-class UAR "
            f"{100 * row['source_control']['uar_before']:.1f} → {100 * row['source_control']['uar_after']:.1f} %, "
            f"{time.perf_counter() - t1:.0f} s",
            flush=True,
        )
    ens = _rows(
        y,
        np.mean(p_before, axis=0).argmax(1),
        np.mean(p_after, axis=0).argmax(1),
        np.mean(p_trans, axis=0).argmax(1),
        spk,
        bootstrap_ci,
        paired_bootstrap_diff,
    )
    mean_row = {key: float(np.mean([r[key]["uar"] for r in per_fold])) for key in ("before", "after", "transductive")}
    return {
        "folds": folds,
        "checkpoints": str(ckpt_root),
        "emodb_clips": len(clips),
        "emodb_seconds": round(float(sum(seconds)), 1),
        "scored_clips": len(scored),
        "scored_per_class": {c: int((y == i).sum()) for i, c in enumerate(CLASSES)},
        "speaker_halves": halves,
        "per_fold": per_fold,
        "mean_over_folds": mean_row,
        "ensemble": ens,
    }


def _rows(y, pb, pa, pt, spk, bootstrap_ci, paired_bootstrap_diff) -> dict[str, Any]:
    """UAR with speaker-bootstrap CIs before / after / transductive and the paired differences to before."""
    cls = list(range(len(CLASSES)))

    def ci(p):
        c = bootstrap_ci(y, p, classes=cls, speakers=spk, n_boot=2000, seed=0)["uar"]
        return {"uar": c["estimate"], "low": c["low"], "high": c["high"]}

    def diff(p):
        d = paired_bootstrap_diff(y, p, pb, spk, classes=cls, n_boot=2000, seed=0)["uar"]
        return {"diff": d["diff"], "low": d["low"], "high": d["high"], "p_not_better": d["p_not_better"]}

    return {
        "before": ci(pb),
        "after": ci(pa),
        "transductive": ci(pt),
        "diff_after": diff(pa),
        "diff_transductive": diff(pt),
        "agreement_after": float(np.mean(pa == pb)),
    }


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def render(doc: dict[str, Any]) -> str:
    r = doc["results"]

    def cell(c):
        return f"{_pct(c['uar'])} ({_pct(c['low'])}–{_pct(c['high'])})"

    def dcell(d):
        return f"{100 * d['diff']:+.1f} ({100 * d['low']:+.1f} to {100 * d['high']:+.1f})"

    lines = [
        HEADING,
        "",
        f"`benchmarks/adabn.py` — {doc['date']}, {doc['machine']}, {doc['seconds']:.0f} s (inference only, "
        "onnxruntime on 1 thread). RAVDESS-trained `cnn` models (the six `ravdess6` cross-validation fold models, "
        "20 actors each, input standardised per utterance, so the input-row map of `ser model adapt --method rows` "
        "cancels for them) scored on EmoDB restricted to the four shared classes (angry / happy / neutral / sad: "
        f"the arg-max among those four of the eight probabilities; {r['scored_clips']} clips: "
        + ", ".join(f"{c} {n}" for c, n in r["scored_per_class"].items())
        + f"), before and after AdaBN (`ser model adapt --method batchnorm`: every BatchNormalization layer's mean "
        "and variance re-estimated, layer after layer, on unlabelled EmoDB audio through the serving features). "
        "Honest protocol: the statistics are estimated on all clips (all seven emotions, labels unused) of one half "
        f"of the EmoDB speakers ({' '.join(r['speaker_halves'][0])} | {' '.join(r['speaker_halves'][1])}) and the "
        "other half is scored, then swapped. *Transductive*: adapted on all 535 EmoDB clips, scored ones included. "
        "UAR in % with 95 % speaker-bootstrap CIs (10 speakers, 2000 resamples); Δ is the paired speaker-bootstrap "
        "difference to the same model unadapted. This EmoDB copy is cut or zero-padded to 2.0 s (data README): not "
        "comparable with published EmoDB numbers. Chance UAR is 25 %.",
        "",
        "| model | unadapted | AdaBN (other speakers) | Δ AdaBN | AdaBN transductive | Δ transductive | labels kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in r["per_fold"]:
        lines.append(
            f"| fold {f['fold']} | {cell(f['before'])} | {cell(f['after'])} | {dcell(f['diff_after'])} | "
            f"{cell(f['transductive'])} | {dcell(f['diff_transductive'])} | {100 * f['agreement_after']:.0f} % |"
        )
    m = r["mean_over_folds"]
    lines.append(
        f"| mean of the {len(r['per_fold'])} models | {_pct(m['before'])} | {_pct(m['after'])} | "
        f"{100 * (m['after'] - m['before']):+.1f} | {_pct(m['transductive'])} | "
        f"{100 * (m['transductive'] - m['before']):+.1f} | |"
    )
    e = r["ensemble"]
    lines.append(
        f"| ensemble of the {len(r['per_fold'])} (mean probability) | {cell(e['before'])} | {cell(e['after'])} | "
        f"{dcell(e['diff_after'])} | {cell(e['transductive'])} | {dcell(e['diff_transductive'])} | "
        f"{100 * e['agreement_after']:.0f} % |"
    )
    lines += [
        "",
        "Control on the source domain (RAVDESS, 8 classes): each fold model adapted on the unlabelled clips of four "
        "of its own training actors and scored on its four test actors. It measures how far re-estimating the "
        "statistics on clean, full-length clips moves a model whose running statistics were averaged over augmented "
        "training crops.",
        "",
        "| model | adapted on actors | test actors | UAR unadapted | UAR AdaBN | Δ (95 % CI) | labels kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in r["per_fold"]:
        c = f["source_control"]
        lines.append(
            f"| fold {f['fold']} | {', '.join(map(str, c['adapted_on_actors']))} | "
            f"{', '.join(map(str, c['test_actors']))} | {_pct(c['uar_before'])} | {_pct(c['uar_after'])} | "
            f"{dcell(c['diff'])} | {100 * c['agreement']:.0f} % |"
        )
    shifts = [la["mean_shift_sd"] for f in r["per_fold"] for a in f["adaptation"] for la in a["layers"]]
    control = [f["source_control"]["mean_shift_sd"] for f in r["per_fold"]]
    cd = [f["source_control"]["diff"]["diff"] for f in r["per_fold"]]
    ck = [f["source_control"]["agreement"] for f in r["per_fold"]]
    lines += [
        "",
        f"The EmoDB layer means sat {np.mean(shifts):.2f} training standard deviations from the graph's running "
        f"means on average (max over layers and folds {np.max(shifts):.2f}; per layer in "
        f"`benchmarks/results/adabn.json`) — about as far as the RAVDESS control's ({np.mean(control):.2f}): most "
        "of that distance is between the running statistics (averaged over augmented 2 s training crops) and "
        "clean full clips, not between the corpora. So AdaBN is not free: on the source domain it moves 8-class "
        f"UAR by {100 * min(cd):+.1f} to {100 * max(cd):+.1f} points (mean {100 * np.mean(cd):+.1f}; "
        f"{100 * (1 - max(ck)):.0f}–{100 * (1 - min(ck)):.0f} % of the labels change), while on EmoDB the 4-class "
        f"UAR moves by {100 * (m['after'] - m['before']):+.1f} points on average over the models and "
        f"{100 * e['diff_after']['diff']:+.1f} for their ensemble. "
        "The bundled model (`src/ser/pretrained/ravdess-cnn`) was exported before the export kept its batch norms "
        "(folded into its convolutions), so AdaBN cannot act on it until it is rebuilt (`make pretrained`).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--ckpt-root", type=Path, default=CKPT_ROOT)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true", help="print, do not write the JSON / RESULTS.md")
    ap.add_argument("--render", action="store_true", help="rewrite the RESULTS.md section from the stored JSON")
    args = ap.parse_args(argv)
    if args.render:
        replace_section(HEADING, render(json.loads(RESULTS_JSON.read_text())))
        return 0
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    results = measure(args.folds, args.ckpt_root, args.threads)
    doc = {
        "machine": machine(),
        "date": dt.date.today().isoformat(),
        "command": "benchmarks/adabn.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seconds": round(time.perf_counter() - start, 1),
        "results": results,
    }
    text = render(doc)
    print(text)
    if not args.no_write:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        RESULTS_JSON.write_text(json.dumps(doc, indent=2) + "\n")
        replace_section(HEADING, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
