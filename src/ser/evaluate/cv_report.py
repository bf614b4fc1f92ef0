"""Evaluation of a cross-validated run: pooled out-of-fold metrics with speaker-bootstrap CIs, mean ± std over
folds, per-group (gender, corpus, age band) metrics with the largest gap, the temperature that calibrates the
out-of-fold probabilities (:mod:`ser.evaluate.calibration`) with the ECE before and after, written as JSON +
Markdown + plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ser.evaluate.calibration import temperature_scaling
from ser.evaluate.fairness import group_metrics
from ser.evaluate.metrics import aggregate_folds, evaluate_predictions
from ser.evaluate.report import write_report

GROUP_COLUMNS = ("gender", "corpus", "age")


def cv_evaluation(
    outputs: list, manifest: pd.DataFrame, classes: list[str], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """``outputs``: one per fold, each with ``y`` (true class indices), ``proba`` and ``utt_ids`` (the fold outputs
    of the cross-validation runner). Returns ``{result, cv, fairness, calibration}`` (JSON-ready; ``calibration``:
    :func:`~ser.evaluate.calibration.temperature_scaling` of the folds)."""
    index = list(range(len(classes)))
    per_fold = [evaluate_predictions(o.y, o.proba.argmax(1), o.proba, classes=index, n_boot=0) for o in outputs]
    y = np.concatenate([o.y for o in outputs])
    proba = np.concatenate([o.proba for o in outputs])
    ids = [u for o in outputs for u in o.utt_ids]
    rows = manifest.set_index("utt_id").loc[ids]
    pooled = evaluate_predictions(
        np.array(classes)[y],
        np.array(classes)[proba.argmax(1)],
        proba,
        classes=classes,
        speakers=rows["speaker"].to_numpy(),
        n_boot=n_boot,
        seed=seed,
    )
    groups = rows[[c for c in GROUP_COLUMNS if c in rows.columns]].reset_index(drop=True)
    fairness = group_metrics(y, proba.argmax(1), groups, classes=index)
    return {
        "result": pooled,
        "cv": aggregate_folds(per_fold, names=[f"fold {k}" for k in range(len(outputs))]),
        "fairness": fairness,
        "calibration": temperature_scaling([(o.proba, o.y) for o in outputs]),
    }


def write_cv_report(out_dir: str | Path, evaluation: dict[str, Any], *, title: str, meta: dict | None = None):
    """Write ``metrics.json``, ``report.md``, ``confusion_matrix.png`` and ``reliability.png`` into ``out_dir``."""
    return write_report(
        out_dir,
        evaluation["result"],
        cv=evaluation["cv"],
        fairness=evaluation["fairness"],
        temperature=evaluation.get("calibration"),
        title=title,
        meta=meta,
    )
