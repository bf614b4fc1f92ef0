"""Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks"): one scalar ``T > 0`` that
divides a model's logits before the softmax, fitted by minimising the negative log-likelihood (NLL) of held-out
predictions. It changes no arg-max (accuracy and UAR stay as they are), only how confident the probabilities are.

Cross-validation saves class *probabilities* per fold (:mod:`ser.train.cv`), not logits. ``log p`` is the logit
vector up to a per-row constant, and the softmax ignores a per-row constant, so ``softmax(log p / T)`` is exactly
``softmax(z / T)`` of the logits ``z`` behind ``p`` (:func:`logits_of`). For an ensemble, whose ONNX graph outputs
the log of the members' mean probability, the same holds with that log as its logits.

Shapes: logits / probabilities ``(n, K)``; ``y`` ``(n,)`` class indices. Pure numpy + scipy; nothing is trained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ser.evaluate.metrics import EvaluationError, expected_calibration_error

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
