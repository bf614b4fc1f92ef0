"""Per-group metrics (gender, corpus, age band, ...) with fairlearn's ``MetricFrame``, and the gaps between groups.

For each grouping attribute the result lists accuracy, UAR and the utterance count of every group, and the largest
gap between groups (max − min) of each metric. Groups smaller than ``min_group_size`` are listed but flagged and
left out of the gap (their metrics are too noisy to compare). Missing group values (NaN, ``""``, ``"unknown"``)
are left out of that attribute entirely. UAR is the balanced accuracy over the classes present in the group.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import accuracy_score

from ser.evaluate.metrics import EvaluationError, check_pair, json_float, uar_score

DEFAULT_ATTRIBUTES: tuple[str, ...] = ("gender", "corpus", "age")
"""Columns used when ``attributes`` is not given (those present in ``groups``)."""

MISSING_VALUES: tuple[str, ...] = ("", "unknown")
"""Group values that mean "not known" and are left out, besides NaN / None."""

GAP_METRICS: tuple[str, ...] = ("accuracy", "uar")


def age_bands(age: ArrayLike, width: int = 10) -> pd.Series:
    """Age in years → band labels ``"20-29"``, ``"30-39"``, ... (``width`` years each); NaN / negative → NA."""
    if width < 1:
        raise EvaluationError(f"age band width must be >= 1, got {width}")
    years = pd.to_numeric(pd.Series(np.asarray(age, dtype=object)), errors="coerce").astype("float64")
    start = (np.floor(years / width) * width).where(years >= 0)
    labels = start.map(lambda s: f"{int(s)}-{int(s) + width - 1}" if pd.notna(s) else pd.NA)
    return labels.astype("string")


def _band_start(label: str) -> int:
    return int(str(label).split("-", 1)[0])


def group_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: pd.DataFrame,
    *,
    classes: Sequence[Hashable] | None = None,
    attributes: Sequence[str] | None = None,
    min_group_size: int = 10,
    age_column: str = "age",
    age_band_width: int = 10,
    missing_values: Sequence[str] = MISSING_VALUES,
) -> dict[str, Any]:
    """Accuracy, UAR and count per group for each attribute column of ``groups``, and the gaps between groups.

    ``groups`` has one row per utterance, aligned by position with ``y_true`` / ``y_pred`` (e.g. the test rows of
    the manifest). ``attributes`` defaults to those of :data:`DEFAULT_ATTRIBUTES` present in ``groups``; the
    ``age_column`` is turned into age bands first (:func:`age_bands`).

    Returns ``{"min_group_size", "attributes": {attr: {"groups": [{"group", "accuracy", "uar", "count",
    "included"}], "gap": {"accuracy", "uar"}, "best": {...}, "worst": {...}, "n_included", "n_ignored"}}}``.
    ``gap`` is ``MetricFrame.difference()`` (max − min) over the included groups, ``None`` with fewer than two;
    ``best`` / ``worst`` name the included group with the highest / lowest value.
    """
    try:
        from fairlearn.metrics import count
    except ImportError as exc:  # pragma: no cover - fairlearn ships with the ``ml`` extra
        raise EvaluationError("per-group metrics need fairlearn (pip install 'ser[ml]')") from exc
    if min_group_size < 1:
        raise EvaluationError(f"min_group_size must be >= 1, got {min_group_size}")
    t, p, _ = check_pair(y_true, y_pred, classes)
    if not isinstance(groups, pd.DataFrame):
        raise EvaluationError(f"groups must be a DataFrame, got {type(groups).__name__}")
    if len(groups) != len(t):
        raise EvaluationError(f"groups has {len(groups)} rows but there are {len(t)} predictions")
    if attributes is None:
        attributes = [a for a in DEFAULT_ATTRIBUTES if a in groups.columns]
    missing_cols = [a for a in attributes if a not in groups.columns]
    if missing_cols:
        raise EvaluationError(f"groups lacks column(s): {', '.join(missing_cols)}")

    metric_fns = {"accuracy": accuracy_score, "uar": uar_score, "count": count}
    out: dict[str, Any] = {}
    for attr in attributes:
        raw = groups[attr].reset_index(drop=True)
        if attr == age_column:
            values = age_bands(raw, age_band_width)
        else:
            values = raw.astype("string").str.strip()
        known = (values.notna() & ~values.isin(list(missing_values))).to_numpy(dtype=bool)
        if not known.any():
            out[attr] = {"groups": [], "gap": dict.fromkeys(GAP_METRICS), "best": {}, "worst": {}}
            out[attr].update(n_included=0, n_ignored=0)
            continue
        feature = values[known].astype(str).rename(attr).reset_index(drop=True)
        out[attr] = _attribute_metrics(
            t[known], p[known], feature, metric_fns, min_group_size, by_age_band=attr == age_column
        )
    return {"min_group_size": min_group_size, "attributes": out}


def _attribute_metrics(
    t: np.ndarray,
    p: np.ndarray,
    feature: pd.Series,
    metric_fns: dict[str, Any],
    min_group_size: int,
    by_age_band: bool,
) -> dict[str, Any]:
    """One attribute's block of :func:`group_metrics` over the utterances whose group (``feature``) is known."""
    from fairlearn.metrics import MetricFrame

    frame = MetricFrame(metrics=metric_fns, y_true=t, y_pred=p, sensitive_features=feature)
    by_group = frame.by_group
    if by_age_band:
        by_group = by_group.loc[sorted(by_group.index, key=_band_start)]
    included = by_group["count"] >= min_group_size
    rows = [
        {
            "group": str(g),
            "accuracy": json_float(r["accuracy"]),
            "uar": json_float(r["uar"]),
            "count": int(r["count"]),
            "included": bool(included[g]),
        }
        for g, r in by_group.iterrows()
    ]
    kept_groups = set(by_group.index[included])
    gap: dict[str, float | None] = dict.fromkeys(GAP_METRICS)
    best: dict[str, str] = {}
    worst: dict[str, str] = {}
    if kept_groups:
        keep = feature.isin(kept_groups).to_numpy(dtype=bool)
        kept = MetricFrame(
            metrics={m: metric_fns[m] for m in GAP_METRICS},
            y_true=t[keep],
            y_pred=p[keep],
            sensitive_features=feature[keep].reset_index(drop=True),
        )
        kept_by_group = kept.by_group
        for m in GAP_METRICS:
            best[m] = str(kept_by_group[m].idxmax())
            worst[m] = str(kept_by_group[m].idxmin())
        if len(kept_groups) >= 2:
            diff = kept.difference(method="between_groups")
            gap = {m: json_float(diff[m]) for m in GAP_METRICS}
    return {
        "groups": rows,
        "gap": gap,
        "best": best,
        "worst": worst,
        "n_included": len(kept_groups),
        "n_ignored": len(by_group) - len(kept_groups),
    }
