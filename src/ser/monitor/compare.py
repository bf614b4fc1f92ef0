"""Champion vs shadow or canary model on live traffic.

- **Shadow** (same requests): how often they agree, and, where feedback says what the right answer was, both
  models' live UAR on the same labelled answers (a paired comparison).
- **Canary** (``role = canary``: other requests of the same traffic, :mod:`ser.monitor.canary`): each side's
  answers, the canary's share, both sides' live UAR on their own labelled answers and a CI of the difference
  (independent bootstraps: the answers are not paired), and the rollbacks recorded for it
  (:attr:`Comparison.canary`).

Pure core over the prediction log's columns: a table of ``prediction_id``, ``role`` (``primary`` / ``shadow`` /
``canary``), ``model_version``, ``label``; feedback rows joined by :func:`ser.monitor.feedback.join`. Bootstrap
CIs resample answers (the log has no speaker), 1,000 draws, seeded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ser.evaluate.metrics import uar_score


@dataclass(frozen=True)
class Comparison:
    """``paired``: answers both models gave (same prediction id); ``agreement`` their share of equal labels with a
    95 % CI; ``per_label``: agreement by the primary's label; ``labelled``: paired answers with feedback, and the
    live UAR of each model on them with CIs and the difference (shadow − primary)."""

    primary_version: str | None
    shadow_version: str | None
    paired: int
    agreement: float | None
    agreement_ci: tuple[float, float] | None
    per_label: dict[str, dict[str, float | int]] = field(default_factory=dict)
    labelled: int = 0
    uar_primary: float | None = None
    uar_shadow: float | None = None
    uar_primary_ci: tuple[float, float] | None = None
    uar_shadow_ci: tuple[float, float] | None = None
    uar_difference_ci: tuple[float, float] | None = None
    canary: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ci(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def pair(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per prediction id that both a primary and a shadow answer have: ``prediction_id``,
    ``label_primary``, ``label_shadow``, ``version_primary``, ``version_shadow`` (answers without a label, e.g. no
    speech, are left out)."""
    p = predictions.dropna(subset=["label"])
    role = p["role"].fillna("primary")
    cols = ["prediction_id", "label", "model_version"]
    prim = p[role == "primary"][cols].drop_duplicates("prediction_id")
    shad = p[role == "shadow"][cols].drop_duplicates("prediction_id")
    return prim.merge(shad, on="prediction_id", suffixes=("_primary", "_shadow")).rename(
        columns={"model_version_primary": "version_primary", "model_version_shadow": "version_shadow"}
    )


def compare(
    predictions: pd.DataFrame, truth: pd.Series | None = None, *, n_boot: int = 1000, seed: int = 0
) -> Comparison:
    """Compare the primary and shadow answers of ``predictions``; ``truth``: true labels indexed by prediction id
    (the latest feedback), or None."""
    pairs = pair(predictions)
    canary = compare_canary(predictions, truth, n_boot=n_boot, seed=seed)
    if pairs.empty:
        return Comparison(None, None, 0, None, None, canary=canary)
    rng = np.random.default_rng(seed)
    agree = (pairs["label_primary"] == pairs["label_shadow"]).to_numpy()
    idx = rng.integers(0, len(agree), size=(n_boot, len(agree)))
    per_label = {
        str(lab): {"n": len(g), "agreement": float((g["label_primary"] == g["label_shadow"]).mean())}
        for lab, g in pairs.groupby("label_primary")
    }
    out: dict[str, Any] = {
        "primary_version": ", ".join(sorted(pairs["version_primary"].astype(str).unique())),
        "shadow_version": ", ".join(sorted(pairs["version_shadow"].astype(str).unique())),
        "paired": len(pairs),
        "agreement": float(agree.mean()),
        "agreement_ci": _ci(agree[idx].mean(axis=1)),
        "per_label": per_label,
    }
    if truth is not None and len(truth):
        lab = pairs[pairs["prediction_id"].isin(truth.index)]
        if len(lab):
            y = truth.loc[lab["prediction_id"]].astype(str).to_numpy()
            a, b = lab["label_primary"].astype(str).to_numpy(), lab["label_shadow"].astype(str).to_numpy()
            draws = rng.integers(0, len(y), size=(n_boot, len(y)))
            ua = np.array([uar_score(y[d], a[d]) for d in draws])
            ub = np.array([uar_score(y[d], b[d]) for d in draws])
            out.update(
                labelled=len(lab),
                uar_primary=uar_score(y, a),
                uar_shadow=uar_score(y, b),
                uar_primary_ci=_ci(ua),
                uar_shadow_ci=_ci(ub),
                uar_difference_ci=_ci(ub - ua),
            )
    return Comparison(**out, canary=canary)


def _side(rows: pd.DataFrame, truth: pd.Series | None, rng: np.random.Generator, n_boot: int) -> tuple[dict, Any]:
    """One side of a canary: its answers, labelled answers, live UAR with a CI; and its bootstrap draws."""
    out: dict[str, Any] = {"answers": len(rows), "labelled": 0, "uar": None, "uar_ci": None}
    if truth is None or not len(truth):
        return out, None
    lab = rows[rows["prediction_id"].isin(truth.index)]
    if lab.empty:
        return out, None
    y = truth.loc[lab["prediction_id"]].astype(str).to_numpy()
    a = lab["label"].astype(str).to_numpy()
    draws = np.array([uar_score(y[d], a[d]) for d in rng.integers(0, len(y), size=(n_boot, len(y)))])
    out.update(labelled=len(lab), uar=uar_score(y, a), uar_ci=_ci(draws))
    return out, draws


def compare_canary(
    predictions: pd.DataFrame, truth: pd.Series | None = None, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any] | None:
    """The canary against the champion (module docstring), or None when no answer has ``role = canary``. The
    champion side is the primary answers (no-speech answers left out on both sides)."""
    p = predictions.dropna(subset=["label"])
    role = p["role"].fillna("primary")
    canary = p[role == "canary"].drop_duplicates("prediction_id")
    if canary.empty:
        return None
    champion = p[role == "primary"].drop_duplicates("prediction_id")
    rng = np.random.default_rng(seed)
    champ, dc = _side(champion, truth, rng, n_boot)
    can, dk = _side(canary, truth, rng, n_boot)
    return {
        "champion_version": ", ".join(sorted(champion["model_version"].astype(str).unique())),
        "canary_version": ", ".join(sorted(canary["model_version"].astype(str).unique())),
        "share": len(canary) / (len(canary) + len(champion)),
        "champion": champ,
        "canary": can,
        "uar_difference_ci": _ci(dk - dc) if dc is not None and dk is not None else None,
        "rollbacks": [],
    }
