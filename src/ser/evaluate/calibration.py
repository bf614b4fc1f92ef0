"""Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks"): one scalar ``T > 0`` that
divides a model's logits before the softmax, fitted by minimising the negative log-likelihood (NLL) of held-out
predictions. It changes no arg-max (accuracy and UAR stay as they are), only how confident the probabilities are.

Cross-validation saves class *probabilities* per fold (:mod:`ser.train.cv`), not logits. ``log p`` is the logit
vector up to a per-row constant, and the softmax ignores a per-row constant, so ``softmax(log p / T)`` is exactly
``softmax(z / T)`` of the logits ``z`` behind ``p`` (:func:`logits_of`). For an ensemble, whose ONNX graph outputs
the log of the members' mean probability, the same holds with that log as its logits.

For benchmarks: :func:`cross_fitted_temperatures` (the per-fold temperature to apply to a fold's predictions under
any condition), :func:`paired_ece_bootstrap` (ECE / NLL before and after with speaker-cluster CIs) and
:func:`abstention_curve` (coverage and accuracy on the answered clips per confidence threshold).

Shapes: logits / probabilities ``(n, K)``; ``y`` ``(n,)`` class indices. Pure numpy + scipy; nothing is trained.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ser.evaluate.metrics import EvaluationError, expected_calibration_error, json_float, uar_score

T_BOUNDS = (0.05, 20.0)
"""The search interval of the temperature; a fit that ends on a bound is reported as such (``at_bound``)."""
ECE_BINS = 15


def logits_of(proba: ArrayLike) -> np.ndarray:
    """``log p`` ``(n, K)`` float64 (probabilities floored at 1e-12): logits up to a per-row constant."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2:
        raise EvaluationError(f"expected (n, classes) probabilities, got shape {p.shape}")
    return np.log(np.clip(p, 1e-12, 1.0))


def scale(logits: ArrayLike, temperature: float) -> np.ndarray:
    """``softmax(logits / T)`` row-wise ``(n, K)`` float64."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise EvaluationError(f"temperature must be a positive number, got {temperature!r}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(logits: ArrayLike, y: ArrayLike, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes ``y`` under ``softmax(logits / T)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    t = np.asarray(y, dtype=np.int64)
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - z[np.arange(len(t)), t]))


def fit_temperature(logits: ArrayLike, y: ArrayLike, bounds: tuple[float, float] = T_BOUNDS) -> float:
    """The temperature in ``bounds`` minimising :func:`nll` of ``y`` (bounded Brent search on ``log T``: the NLL is
    unimodal in ``T``, convex in ``1/T``)."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(y, dtype=np.int64)
    if z.ndim != 2 or len(z) != len(t) or len(t) == 0:
        raise EvaluationError(f"need (n, K) logits and n labels, got {z.shape} and {t.shape}")
    if t.min() < 0 or t.max() >= z.shape[1]:
        raise EvaluationError("labels must be class indices into the logits' columns")
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(lambda s: nll(z, t, math.exp(s)), bounds=(lo, hi), method="bounded", options={"xatol": 1e-5})
    return float(math.exp(res.x))


def temperature_scaling(
    folds: Sequence[tuple[ArrayLike, ArrayLike]], *, n_bins: int = ECE_BINS, bounds: tuple[float, float] = T_BOUNDS
) -> dict[str, Any]:
    """Fit one temperature on the pooled out-of-fold predictions ``folds`` (``[(proba (n_k, K), y (n_k,)), ...]``)
    and measure it. JSON-ready ``{"method", "temperature", "at_bound", "n", "n_folds", "n_bins", "ece_before",
    "ece_after", "nll_before", "nll_after", "after"}``.

    ``ece_after`` / ``nll_after`` are honest when there are two folds or more: each fold is scaled with the
    temperature fitted on the *other* folds (``after = "cross-fitted by fold"``); with one fold the temperature is
    measured on the predictions it was fitted on (``after = "in-sample"``, optimistic). ``temperature`` is always
    the fit on every fold: the one a model folder ships with.
    """
    if not folds:
        raise EvaluationError("no fold predictions to calibrate on")
    zs = [logits_of(p) for p, _ in folds]
    ys = [np.asarray(y, dtype=np.int64) for _, y in folds]
    z, y = np.concatenate(zs), np.concatenate(ys)
    temperature = fit_temperature(z, y, bounds)
    if len(folds) >= 2:
        scaled = []
        for k in range(len(folds)):
            rest = [i for i in range(len(folds)) if i != k]
            t_k = fit_temperature(np.concatenate([zs[i] for i in rest]), np.concatenate([ys[i] for i in rest]), bounds)
            scaled.append(zs[k] / t_k)
        after_logits, after = np.concatenate(scaled), "cross-fitted by fold"
    else:
        after_logits, after = z / temperature, "in-sample"
    return {
        "method": "temperature",
        "temperature": temperature,
        "at_bound": bool(min(abs(temperature - b) / b for b in bounds) < 1e-3),
        "n": len(y),
        "n_folds": len(folds),
        "n_bins": n_bins,
        "ece_before": expected_calibration_error(scale(z, 1.0), y, n_bins),
        "ece_after": expected_calibration_error(scale(after_logits, 1.0), y, n_bins),
        "nll_before": nll(z, y),
        "nll_after": nll(after_logits, y),
        "after": after,
    }


def cross_fitted_temperatures(
    folds: Mapping[Hashable, tuple[ArrayLike, ArrayLike]],
    keys: Sequence[Hashable] | None = None,
    *,
    bounds: tuple[float, float] = T_BOUNDS,
) -> dict[Hashable, float]:
    """For each fold ``k`` of ``keys`` (default: every fold), the temperature fitted on the pooled predictions of
    every fold of ``folds`` (``{k: (proba (n_k, K), y (n_k,))}``) *but* ``k``.

    Apply ``T_k`` to any predictions of fold ``k``'s test speakers (its clean clips, or the same clips through a
    degraded channel) and the figure is honest: the temperature never saw those speakers. A key need not be in
    ``folds`` (then every fold is used). Needs at least one other fold per key.
    """
    zs = {k: logits_of(p) for k, (p, _) in folds.items()}
    ys = {k: np.asarray(y, dtype=np.int64) for k, (_, y) in folds.items()}
    out: dict[Hashable, float] = {}
    for k in list(folds) if keys is None else keys:
        rest = [i for i in folds if i != k]
        if not rest:
            raise EvaluationError(f"no fold other than {k!r} to fit its temperature on")
        out[k] = fit_temperature(np.concatenate([zs[i] for i in rest]), np.concatenate([ys[i] for i in rest]), bounds)
    return out


def _speaker_sums(proba: np.ndarray, y: np.ndarray, codes: np.ndarray, n_clusters: int, n_bins: int):
    """Per speaker: ``(sum over each confidence bin of (correct - confidence)`` ``(S, n_bins)``, summed NLL
    ``(S,)``)`` with the bins of :func:`ser.evaluate.metrics.reliability_data`."""
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], confidence, side="left")
    gap = np.zeros((n_clusters, n_bins))
    np.add.at(gap, (codes, idx), correct - confidence)
    loss = np.zeros(n_clusters)
    np.add.at(loss, codes, -np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0)))
    return gap, loss


def paired_ece_bootstrap(
    proba_before: ArrayLike,
    proba_after: ArrayLike,
    y: ArrayLike,
    speakers: ArrayLike,
    *,
    n_bins: int = ECE_BINS,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """ECE and NLL of two probability sets for the *same* clips (``(n, K)`` each, e.g. before and after
    temperature scaling), with percentile speaker-cluster bootstrap CIs for each and for ``after - before``.

    Each replicate draws S speakers with replacement and scores both sets on that draw (paired, as
    :func:`ser.evaluate.metrics.paired_bootstrap_diff`). Exact and fast on per-speaker sums: with the bins of
    :func:`ser.evaluate.metrics.reliability_data`, ECE = Σ_b |Σ_{i in b} (correct_i - conf_i)| / n, so a replicate
    is Σ_b |w · G[:, b]| / (w · n_s) for the speaker weights ``w`` and per-speaker bin sums ``G``.

    Returns ``{"method": "speaker", "level", "n_boot", "seed", "n_clusters", "n", "n_bins",
    "ece" | "nll": {"before", "before_ci", "after", "after_ci", "diff", "diff_ci", "p_not_better"}}``; ``diff`` is
    after - before and ``p_not_better`` the share of replicates where ``after`` is not lower. ECE is a sum of
    absolute values, biased upwards under resampling: for a well-calibrated set its interval can lie above the
    point figure (the interval of the difference is the one to read).
    """
    if n_boot < 1:
        raise EvaluationError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise EvaluationError(f"level must be in (0, 1), got {level}")
    pb = np.asarray(proba_before, dtype=np.float64)
    pa = np.asarray(proba_after, dtype=np.float64)
    t = np.asarray(y, dtype=np.int64).ravel()
    spk = np.asarray(speakers).astype(str).ravel()
    if pb.ndim != 2 or pb.shape != pa.shape or len(t) != len(pb) or len(spk) != len(t) or len(t) == 0:
        raise EvaluationError(f"need two (n, K) probability sets, n labels and n speakers; got {pb.shape}, "
                              f"{pa.shape}, {t.shape}, {spk.shape}")  # fmt: skip
    if t.min() < 0 or t.max() >= pb.shape[1]:
        raise EvaluationError("labels must be class indices into the probabilities' columns")
    _, codes = np.unique(spk, return_inverse=True)
    s = int(codes.max()) + 1
    count = np.bincount(codes, minlength=s).astype(np.float64)
    sums = [_speaker_sums(p, t, codes, s, n_bins) for p in (pb, pa)]
    w = np.random.default_rng(seed).multinomial(s, np.full(s, 1.0 / s), size=n_boot).astype(np.float64)
    n_rep = w @ count
    ece_rep = [np.abs(w @ g).sum(axis=1) / n_rep for g, _ in sums]
    nll_rep = [(w @ loss) / n_rep for _, loss in sums]
    ece_pt = [float(np.abs(g.sum(axis=0)).sum() / len(t)) for g, _ in sums]
    nll_pt = [float(loss.sum() / len(t)) for _, loss in sums]
    alpha = (1 - level) / 2

    def ci(v: np.ndarray) -> list[float | None]:
        return [json_float(q) for q in np.quantile(v, [alpha, 1 - alpha])]

    out: dict[str, Any] = {"method": "speaker", "level": level, "n_boot": n_boot, "seed": seed, "n_clusters": s}
    out.update(n=len(t), n_bins=n_bins)
    for name, rep, pt in (("ece", ece_rep, ece_pt), ("nll", nll_rep, nll_pt)):
        d = rep[1] - rep[0]
        out[name] = {
            "before": pt[0],
            "before_ci": ci(rep[0]),
            "after": pt[1],
            "after_ci": ci(rep[1]),
            "diff": pt[1] - pt[0],
            "diff_ci": ci(d),
            "p_not_better": float(np.mean(d >= 0)),
        }
    return out


def abstention_curve(proba: ArrayLike, y: ArrayLike, thresholds: Sequence[float]) -> list[dict[str, Any]]:
    """What a confidence threshold buys: for each threshold ``t``, answer only the clips whose top probability is
    ``>= t`` (the service labels the others "uncertain": its ``abstain_below``) and score the answered ones.

    ``proba`` ``(n, K)`` (use the probabilities the service would output, i.e. temperature-scaled), ``y`` ``(n,)``
    class indices. Returns one ``{"threshold", "coverage", "n_answered", "accuracy", "uar"}`` per threshold, in
    order; ``coverage`` is the answered share, ``uar`` the mean recall over the classes present among the answered
    clips; accuracy and UAR are ``None`` when nothing is answered.
    """
    p = np.asarray(proba, dtype=np.float64)
    t = np.asarray(y, dtype=np.int64).ravel()
    if p.ndim != 2 or len(p) != len(t) or len(t) == 0:
        raise EvaluationError(f"need (n, K) probabilities and n labels, got {p.shape} and {t.shape}")
    confidence, pred = p.max(axis=1), p.argmax(axis=1)
    rows = []
    for th in thresholds:
        answered = confidence >= th
        n_ans = int(answered.sum())
        rows.append(
            {
                "threshold": float(th),
                "coverage": n_ans / len(t),
                "n_answered": n_ans,
                "accuracy": float(np.mean(pred[answered] == t[answered])) if n_ans else None,
                "uar": uar_score(t[answered], pred[answered]) if n_ans else None,
            }
        )
    return rows
