"""Classification metrics for emotion recognition: point estimates, calibration, bootstrap CIs, fold aggregation.

Conventions (shared by every function here):

- ``classes`` is the ordered class list of the task (e.g. ``["angry", "happy", "neutral", "sad"]``). Its order
  fixes the rows / columns of confusion matrices and the columns of ``proba``.
- ``y_true`` / ``y_pred`` hold either the class labels themselves (members of ``classes``, strings or ints) or,
  when ``classes`` are not integers, integer *indices* into ``classes``. See :func:`encode_labels`.
- ``proba`` is an ``(n, K)`` array of class probabilities, columns in ``classes`` order, rows summing to 1.
- **UAR** (unweighted average recall) = balanced accuracy = the mean recall over the classes that occur in
  ``y_true``. Macro precision / recall / F1 average over the same classes (those with support > 0), so macro
  recall equals UAR even when a fold lacks a class; a class that is predicted but never true still hurts the
  precision of the classes it was confused with. A class with support but no predictions has precision 0.
- All rates are fractions in [0, 1]. Every ``dict`` returned is JSON-ready (Python scalars, ``None`` for
  undefined values).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from ser.errors import SerError

CI_METRICS: tuple[str, ...] = ("accuracy", "uar", "macro_f1")
"""Metrics that get bootstrap confidence intervals."""

SUMMARY_METRICS: tuple[str, ...] = (
    "accuracy",
    "uar",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_precision",
    "weighted_recall",
    "weighted_f1",
    "ece",
)
"""Scalar metrics in :func:`evaluate_predictions`' ``metrics`` block, in report order."""


class EvaluationError(SerError):
    """Predictions, labels or probabilities that cannot be evaluated (shape, unknown label, bad values)."""


# ---------------------------------------------------------------------------------------------------------------
# label handling


def _is_int_like(values: np.ndarray) -> bool:
    return values.dtype.kind in "iu" or (
        values.dtype.kind == "O" and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values)
    )


def _json_label(c: Hashable) -> str | int:
    if isinstance(c, np.integer | int) and not isinstance(c, bool):
        return int(c)
    return str(c)


def resolve_classes(classes: Sequence[Hashable] | None, *label_arrays: ArrayLike) -> list[str | int]:
    """The class list: ``classes`` as given (checked for duplicates), or the sorted union of the labels seen."""
    if classes is None:
        seen: set = set()
        for arr in label_arrays:
            seen.update(np.asarray(arr, dtype=object).ravel().tolist())
        if not seen:
            raise EvaluationError("no labels to evaluate and no class list given")
        try:
            ordered = sorted(seen)
        except TypeError as exc:
            raise EvaluationError("labels mix types; pass classes= explicitly") from exc
        return [_json_label(c) for c in ordered]
    out = [_json_label(c) for c in classes]
    if not out:
        raise EvaluationError("class list is empty")
    if len(set(out)) != len(out):
        raise EvaluationError(f"class list has duplicates: {out}")
    return out


def encode_labels(y: ArrayLike, classes: Sequence[str | int], name: str = "labels") -> np.ndarray:
    """Map labels to indices into ``classes`` (int64 array of shape ``(n,)``).

    Labels that are members of ``classes`` map to their position. If ``classes`` are not integers, integer labels
    are read as indices (``0 <= y < K``). Anything else raises :class:`EvaluationError` naming the unknown labels.
    """
    arr = np.asarray(y, dtype=object).ravel()
    lookup = {c: i for i, c in enumerate(classes)}
    normalised = [_json_label(v) for v in arr]
    codes = np.fromiter((lookup.get(v, -1) for v in normalised), dtype=np.int64, count=len(arr))
    if (codes >= 0).all():
        return codes
    classes_are_ints = all(isinstance(c, int) for c in classes)
    if not classes_are_ints and len(arr) and _is_int_like(arr):
        idx = arr.astype(np.int64)
        if ((idx >= 0) & (idx < len(classes))).all():
            return idx
        bad = sorted({int(v) for v in idx if not 0 <= v < len(classes)})
        raise EvaluationError(f"{name}: index out of range 0..{len(classes) - 1}: {bad[:5]}")
    unknown = sorted({str(v) for v, c in zip(normalised, codes, strict=True) if c < 0})
    raise EvaluationError(f"{name}: label(s) not in classes {list(classes)}: {unknown[:5]}")


def check_pair(y_true: ArrayLike, y_pred: ArrayLike, classes: Sequence[Hashable] | None):
    """``(y_true, y_pred, classes)`` as two index arrays into the resolved class list (:func:`resolve_classes`,
    :func:`encode_labels`); unequal lengths or nothing to evaluate raise :class:`EvaluationError`."""
    cls = resolve_classes(classes, y_true, y_pred)
    t = encode_labels(y_true, cls, "y_true")
    p = encode_labels(y_pred, cls, "y_pred")
    if len(t) != len(p):
        raise EvaluationError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    if len(t) == 0:
        raise EvaluationError("nothing to evaluate: y_true is empty")
    return t, p, cls


def check_proba(proba: ArrayLike, n: int, k: int) -> np.ndarray:
    """Validate an ``(n, k)`` probability matrix (finite, in [0, 1], rows summing to 1 within 0.01)."""
    arr = np.asarray(proba, dtype=np.float64)
    if arr.shape != (n, k):
        raise EvaluationError(
            f"proba must have shape ({n}, {k}) (utterances, classes in class-list order), got {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise EvaluationError("proba contains NaN or infinite values")
    if (arr < -1e-6).any() or (arr > 1 + 1e-6).any():
        raise EvaluationError("proba values must lie in [0, 1] (pass softmax outputs, not logits)")
    sums = arr.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-2):
        worst = float(sums[np.argmax(np.abs(sums - 1))])
        raise EvaluationError(f"proba rows must sum to 1 (one row sums to {worst:.4f})")
    return np.clip(arr, 0.0, 1.0)


def json_float(x: Any) -> float | None:
    """A JSON-ready float: ``None`` for NaN / inf / None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------------------------
# point metrics


def uar_score(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """UAR = ``balanced_accuracy_score``: mean recall over the classes present in ``y_true``.

    Predictions of classes absent from ``y_true`` count as errors but add no class to the average (scikit-learn's
    warnings about them and about a single label, harmless here, are silenced).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        return float(balanced_accuracy_score(y_true, y_pred))


def classification_metrics(
    y_true: ArrayLike, y_pred: ArrayLike, *, classes: Sequence[Hashable] | None = None
) -> dict[str, Any]:
    """Point metrics with scikit-learn: accuracy, UAR, macro / weighted P/R/F1, per-class report, confusion matrix.

    Returns ``{"n", "classes", "metrics": {...}, "per_class": [{"class", "precision", "recall", "f1", "support"}],
    "confusion": {"labels", "counts", "normalized"}}``. ``normalized`` is row-normalised (each true class sums to 1;
    ``None`` rows for classes absent from ``y_true``). A per-class recall / F1 is ``None`` when the class has no
    support.
    """
    t, p, cls = check_pair(y_true, y_pred, classes)
    k = len(cls)
    all_idx = list(range(k))
    present = sorted(set(t.tolist()))
    metrics: dict[str, float | None] = {"accuracy": float(accuracy_score(t, p)), "uar": uar_score(t, p)}
    for avg in ("macro", "weighted"):
        pr, rc, f1, _ = precision_recall_fscore_support(t, p, labels=present, average=avg, zero_division=0)
        metrics[f"{avg}_precision"] = float(pr)
        metrics[f"{avg}_recall"] = float(rc)
        metrics[f"{avg}_f1"] = float(f1)
    pr, rc, f1, sup = precision_recall_fscore_support(t, p, labels=all_idx, average=None, zero_division=0)
    per_class = [
        {
            "class": cls[i],
            "precision": float(pr[i]),
            "recall": float(rc[i]) if sup[i] > 0 else None,
            "f1": float(f1[i]) if sup[i] > 0 else None,
            "support": int(sup[i]),
        }
        for i in range(k)
    ]
    cm = confusion_matrix(t, p, labels=all_idx)
    return {
        "n": len(t),
        "classes": cls,
        "metrics": metrics,
        "per_class": per_class,
        "confusion": confusion_block(cm, cls),
    }


def normalize_rows(cm: ArrayLike) -> np.ndarray:
    """Row-normalise a confusion matrix of counts; rows with no support become NaN."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, cm / np.where(rows > 0, rows, 1), np.nan)


def confusion_block(cm: ArrayLike, classes: Sequence[str | int]) -> dict[str, Any]:
    """JSON block for a confusion matrix: labels (rows = true, columns = predicted), counts, row-normalised."""
    counts = np.asarray(cm, dtype=np.int64)
    norm = normalize_rows(counts)
    return {
        "labels": list(classes),
        "counts": counts.tolist(),
        "normalized": [[json_float(v) for v in row] for row in norm],
    }


def metrics_from_confusion(cm: ArrayLike) -> dict[str, np.ndarray]:
    """Accuracy, UAR and macro F1 from confusion matrices of counts, vectorised over leading axes.

    ``cm`` has shape ``(..., K, K)`` (rows = true class). Same definitions as :func:`classification_metrics`
    (averages over classes with support > 0); used by the bootstrap and for pooled fold matrices.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    total = support.sum(axis=-1)
    present = support > 0
    n_present = present.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = tp.sum(axis=-1) / total
        recall = np.where(present, tp / np.where(present, support, 1), 0.0)
        f1 = np.where(present, 2 * tp / np.where(present, support + predicted, 1), 0.0)
        uar = recall.sum(axis=-1) / n_present
        macro_f1 = f1.sum(axis=-1) / n_present
    return {"accuracy": accuracy, "uar": uar, "macro_f1": macro_f1}


# ---------------------------------------------------------------------------------------------------------------
# calibration


def reliability_data(
    proba: ArrayLike,
    y_true: ArrayLike,
    n_bins: int = 15,
    *,
    classes: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """Top-label calibration with ``n_bins`` equal-width confidence bins over [0, 1].

    Confidence is the largest probability of a row; a prediction is correct when its arg-max is the true class.
    Bin ``b`` covers ``(b/n_bins, (b+1)/n_bins]`` (the first bin also holds 0). ``y_true`` holds indices into the
    columns of ``proba`` or, with ``classes``, labels (see :func:`encode_labels`).

    Returns ``{"ece", "mce", "n_bins", "bins": [{"lower", "upper", "count", "accuracy", "confidence"}]}`` where
    ECE = Σ_b (|B_b| / n) · |acc(B_b) − conf(B_b)| and MCE is the largest gap over non-empty bins; an empty bin has
    ``None`` accuracy and confidence.
    """
    if n_bins < 1:
        raise EvaluationError(f"n_bins must be >= 1, got {n_bins}")
    arr = np.asarray(proba, dtype=np.float64)
    if arr.ndim != 2:
        raise EvaluationError(f"proba must be 2-D (utterances, classes), got shape {arr.shape}")
    k = arr.shape[1]
    cls = resolve_classes(classes) if classes is not None else list(range(k))
    t = encode_labels(y_true, cls, "y_true")
    arr = check_proba(arr, len(t), len(cls))
    if len(t) == 0:
        raise EvaluationError("nothing to evaluate: y_true is empty")
    confidence = arr.max(axis=1)
    correct = (arr.argmax(axis=1) == t).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(idx, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=confidence, minlength=n_bins)
    nonempty = count > 0
    safe = np.where(nonempty, count, 1)
    acc = np.where(nonempty, acc_sum / safe, np.nan)
    conf = np.where(nonempty, conf_sum / safe, np.nan)
    gaps = np.abs(acc - conf)
    ece = float(np.sum(count[nonempty] / len(t) * gaps[nonempty]))
    mce = float(gaps[nonempty].max())
    bins = [
        {
            "lower": float(edges[b]),
            "upper": float(edges[b + 1]),
            "count": int(count[b]),
            "accuracy": json_float(acc[b]),
            "confidence": json_float(conf[b]),
        }
        for b in range(n_bins)
    ]
    return {"ece": ece, "mce": mce, "n_bins": n_bins, "bins": bins}


def expected_calibration_error(
    proba: ArrayLike, y_true: ArrayLike, n_bins: int = 15, *, classes: Sequence[Hashable] | None = None
) -> float:
    """Expected calibration error in [0, 1] (see :func:`reliability_data` for the binning)."""
    return reliability_data(proba, y_true, n_bins, classes=classes)["ece"]


# ---------------------------------------------------------------------------------------------------------------
# bootstrap


def bootstrap_ci(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    classes: Sequence[Hashable] | None = None,
    speakers: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Percentile bootstrap confidence intervals for accuracy, UAR and macro F1.

    Without ``speakers`` utterances are resampled with replacement. With ``speakers`` (one id per utterance) whole
    speakers are resampled with replacement (cluster bootstrap) — the honest interval when utterances of one
    speaker are correlated. Both are computed exactly on confusion-matrix counts: resampling n utterances draws the
    cell counts from Multinomial(n, cm / n); resampling S speakers sums per-speaker matrices weighted by
    Multinomial(S, 1/S) draw counts. That makes 1000 replicates take milliseconds.

    Returns ``{"method": "utterance"|"speaker", "level", "n_boot", "seed", "n_clusters",
    "<metric>": {"estimate", "low", "high"}}`` for each metric in :data:`CI_METRICS`.
    """
    if n_boot < 1:
        raise EvaluationError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise EvaluationError(f"level must be in (0, 1), got {level}")
    t, p, cls = check_pair(y_true, y_pred, classes)
    k = len(cls)
    rng = np.random.default_rng(seed)
    cell = t * k + p
    draws: np.ndarray  # bootstrap confusion-cell counts, (n_boot, k * k): integer draws or weighted float sums
    if speakers is None:
        method = "utterance"
        counts = np.bincount(cell, minlength=k * k).astype(np.float64)
        n_clusters = len(t)
        draws = rng.multinomial(len(t), counts / counts.sum(), size=n_boot)
    else:
        method = "speaker"
        spk = np.asarray(speakers, dtype=object).ravel()
        if len(spk) != len(t):
            raise EvaluationError(f"speakers has {len(spk)} ids but there are {len(t)} utterances")
        if pd.isna(spk).any():
            raise EvaluationError("speakers contains missing ids")
        _, codes = np.unique(spk.astype(str), return_inverse=True)
        n_clusters = int(codes.max()) + 1
        per_speaker = np.zeros((n_clusters, k * k))
        np.add.at(per_speaker, (codes, cell), 1.0)
        weights = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot)
        draws = weights @ per_speaker
    replicates = metrics_from_confusion(draws.reshape(n_boot, k, k))
    point = metrics_from_confusion(np.bincount(cell, minlength=k * k).reshape(k, k))
    alpha = (1 - level) / 2
    out: dict[str, Any] = {
        "method": method,
        "level": level,
        "n_boot": n_boot,
        "seed": seed,
        "n_clusters": n_clusters,
    }
    for name in CI_METRICS:
        vals = replicates[name]
        vals = vals[np.isfinite(vals)]
        low, high = np.quantile(vals, [alpha, 1 - alpha]) if len(vals) else (np.nan, np.nan)
        out[name] = {"estimate": json_float(point[name]), "low": json_float(low), "high": json_float(high)}
    return out


def paired_bootstrap_diff(
    y_true: ArrayLike,
    y_pred_a: ArrayLike,
    y_pred_b: ArrayLike,
    speakers: ArrayLike,
    *,
    classes: Sequence[Hashable] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Paired speaker-cluster bootstrap of the difference ``a - b`` of two models' metrics on the *same*
    utterances (``y_pred_a`` and ``y_pred_b`` aligned with ``y_true`` and ``speakers``).

    Each replicate draws S speakers with replacement and scores both models on that same draw, so the interval of
    the difference keeps the pairing (two separate intervals would overstate its uncertainty). Exact on
    per-speaker confusion counts, as :func:`bootstrap_ci`. Returns ``{"method": "speaker", "level", "n_boot",
    "seed", "n_clusters", "<metric>": {"a", "b", "diff", "low", "high", "p_not_better"}}`` for each metric in
    :data:`CI_METRICS`; ``low`` / ``high`` bound ``diff`` and ``p_not_better`` is the share of replicates with
    ``diff <= 0``.
    """
    if n_boot < 1:
        raise EvaluationError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise EvaluationError(f"level must be in (0, 1), got {level}")
    t, pa_, cls = check_pair(y_true, y_pred_a, classes)
    _, pb_, _ = check_pair(y_true, y_pred_b, cls)
    spk = np.asarray(speakers, dtype=object).ravel()
    if len(spk) != len(t):
        raise EvaluationError(f"speakers has {len(spk)} ids but there are {len(t)} utterances")
    if pd.isna(spk).any():
        raise EvaluationError("speakers contains missing ids")
    k = len(cls)
    _, codes = np.unique(spk.astype(str), return_inverse=True)
    n_clusters = int(codes.max()) + 1
    per_a = np.zeros((n_clusters, k * k))
    per_b = np.zeros((n_clusters, k * k))
    np.add.at(per_a, (codes, t * k + pa_), 1.0)
    np.add.at(per_b, (codes, t * k + pb_), 1.0)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot)
    rep_a = metrics_from_confusion((weights @ per_a).reshape(n_boot, k, k))
    rep_b = metrics_from_confusion((weights @ per_b).reshape(n_boot, k, k))
    point_a = metrics_from_confusion(per_a.sum(0).reshape(k, k))
    point_b = metrics_from_confusion(per_b.sum(0).reshape(k, k))
    alpha = (1 - level) / 2
    out: dict[str, Any] = {"method": "speaker", "level": level, "n_boot": n_boot, "seed": seed}
    out["n_clusters"] = n_clusters
    for name in CI_METRICS:
        d = rep_a[name] - rep_b[name]
        d = d[np.isfinite(d)]
        low, high = np.quantile(d, [alpha, 1 - alpha]) if len(d) else (np.nan, np.nan)
        out[name] = {
            "a": json_float(point_a[name]),
            "b": json_float(point_b[name]),
            "diff": json_float(point_a[name] - point_b[name]),
            "low": json_float(low),
            "high": json_float(high),
            "p_not_better": json_float(np.mean(d <= 0)) if len(d) else None,
        }
    return out


# ---------------------------------------------------------------------------------------------------------------
# one evaluation


def evaluate_predictions(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    proba: ArrayLike | None = None,
    *,
    classes: Sequence[Hashable] | None = None,
    speakers: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = 15,
    level: float = 0.95,
) -> dict[str, Any]:
    """Everything the report needs about one set of predictions, as a JSON-ready dict.

    Shapes: ``y_true``, ``y_pred`` ``(n,)``; ``proba`` ``(n, K)`` with columns in ``classes`` order or ``None``;
    ``speakers`` ``(n,)`` ids (turns on the speaker-cluster bootstrap) or ``None``. ``n_boot=0`` skips the CIs.

    Keys: ``n``, ``classes``, ``metrics`` (accuracy, uar, macro_/weighted_ precision/recall/f1, ece — ``None``
    without ``proba``), ``ci`` (see :func:`bootstrap_ci`, ``None`` when skipped), ``per_class``, ``confusion``
    (labels, counts, normalized) and ``calibration`` (see :func:`reliability_data`, ``None`` without ``proba``).
    """
    if n_boot < 0:
        raise EvaluationError(f"n_boot must be >= 0 (0 skips the confidence intervals), got {n_boot}")
    result = classification_metrics(y_true, y_pred, classes=classes)
    cls = result["classes"]
    calibration = None
    if proba is not None:
        checked = check_proba(proba, result["n"], len(cls))
        calibration = reliability_data(checked, encode_labels(y_true, cls, "y_true"), n_bins)
    result["metrics"]["ece"] = calibration["ece"] if calibration else None
    result["ci"] = (
        bootstrap_ci(y_true, y_pred, classes=cls, speakers=speakers, n_boot=n_boot, seed=seed, level=level)
        if n_boot > 0
        else None
    )
    result["calibration"] = calibration
    order = ["n", "classes", "metrics", "ci", "per_class", "confusion", "calibration"]
    return {key: result[key] for key in order}


# ---------------------------------------------------------------------------------------------------------------
# cross-validation


def aggregate_folds(fold_results: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None) -> dict[str, Any]:
    """Summarise per-fold :func:`evaluate_predictions` results.

    Every fold must use the same class list. Returns ``{"n_folds", "classes", "std_ddof": 1,
    "metrics": {name: {"mean", "std", "values"}}, "per_fold": [{"fold", "n", <metric>: value}],
    "pooled": {"n", "accuracy", "uar", "macro_f1"}, "confusion": <pooled counts + row-normalised>}``.
    ``std`` is the sample standard deviation over folds (ddof = 1; ``None`` for a single fold); a metric missing
    (``None``) in some fold is averaged over the folds that have it. Rates stay fractions in [0, 1].
    """
    if not fold_results:
        raise EvaluationError("no fold results to aggregate")
    if names is not None and len(names) != len(fold_results):
        raise EvaluationError(f"{len(names)} fold names for {len(fold_results)} folds")
    classes = list(fold_results[0]["classes"])
    for i, fold in enumerate(fold_results):
        if list(fold["classes"]) != classes:
            raise EvaluationError(f"fold {i} has classes {list(fold['classes'])}, fold 0 has {classes}")
    fold_names = [str(n) for n in names] if names is not None else [str(i) for i in range(len(fold_results))]
    metrics: dict[str, Any] = {}
    for name in SUMMARY_METRICS:
        values = [fold["metrics"].get(name) for fold in fold_results]
        present = np.array([v for v in values if v is not None], dtype=np.float64)
        if len(present) == 0:
            continue
        metrics[name] = {
            "mean": json_float(present.mean()),
            "std": json_float(present.std(ddof=1)) if len(present) > 1 else None,
            "values": [json_float(v) for v in values],
        }
    per_fold = [
        {"fold": fold_names[i], "n": int(fold["n"]), **{m: json_float(fold["metrics"].get(m)) for m in metrics}}
        for i, fold in enumerate(fold_results)
    ]
    pooled_cm = np.sum([np.asarray(fold["confusion"]["counts"], dtype=np.int64) for fold in fold_results], axis=0)
    pooled = {"n": int(pooled_cm.sum()), **{k: json_float(v) for k, v in metrics_from_confusion(pooled_cm).items()}}
    return {
        "n_folds": len(fold_results),
        "classes": classes,
        "std_ddof": 1,
        "metrics": metrics,
        "per_fold": per_fold,
        "pooled": pooled,
        "confusion": confusion_block(pooled_cm, classes),
    }
