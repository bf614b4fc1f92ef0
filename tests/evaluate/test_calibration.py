"""Temperature scaling: the fit recovers a known temperature, honest before / after ECE, the report's line."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ser.evaluate.calibration import fit_temperature, logits_of, nll, scale, temperature_scaling
from ser.evaluate.metrics import EvaluationError, expected_calibration_error


def _calibrated(n: int, k: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``(n, k)`` and labels drawn from ``softmax(logits)``: calibrated at T = 1 by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, (n, k))
    p = scale(z, 1.0)
    y = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)  # one draw per row from its distribution
    return z, y


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_recovers_a_known_temperature(true_t):
    z, y = _calibrated(6000)
    # a model whose logits are the calibrated ones times T: over-confident for T > 1, under-confident for T < 1
    assert fit_temperature(z * true_t, y) == pytest.approx(true_t, rel=0.06)


def test_scaling_improves_nll_and_ece_and_keeps_the_argmax():
    z, y = _calibrated(3000, seed=1)
    over = 3.0 * z  # over-confident: the fitted temperature is about 3
    t = fit_temperature(over, y)
    assert t == pytest.approx(3.0, rel=0.08)
    assert nll(over, y, t) < nll(over, y, 1.0)
    before = expected_calibration_error(scale(over, 1.0), y)
    after = expected_calibration_error(scale(over, t), y)
    assert after < before / 2
    assert (scale(over, t).argmax(1) == over.argmax(1)).all()


def test_log_probabilities_stand_in_for_logits():
    """Folds save probabilities: softmax(log p / T) is softmax(z / T) of the logits behind p."""
    z, _ = _calibrated(50, seed=2)
    for t in (0.7, 1.0, 2.0):
        np.testing.assert_allclose(scale(logits_of(scale(z, 1.0)), t), scale(z, t), atol=1e-9)


def test_temperature_scaling_cross_fits_the_after_figures():
    z, y = _calibrated(3000, seed=3)
    over = 2.0 * z
    folds = [(scale(over[i::3], 1.0), y[i::3]) for i in range(3)]
    block = temperature_scaling(folds)
    assert block["after"] == "cross-fitted by fold" and block["n"] == 3000 and block["n_folds"] == 3
    assert block["temperature"] == pytest.approx(2.0, rel=0.1) and not block["at_bound"]
    assert block["ece_after"] < block["ece_before"] and block["nll_after"] < block["nll_before"]
    assert block["n_bins"] == 15
    one = temperature_scaling(folds[:1])
    assert one["after"] == "in-sample" and one["n"] == len(folds[0][1])
    with pytest.raises(EvaluationError):
        temperature_scaling([])


def test_ece_math_on_a_hand_made_example():
    """15 bins: 4 predictions at confidence 0.9 with 3 right (gap 0.15), 2 at 0.5 with 2 right (gap 0.5):
    ECE = 4/6 · 0.15 + 2/6 · 0.5."""
    proba = np.array([[0.9, 0.1]] * 4 + [[0.5, 0.5]] * 2)
    y = np.array([0, 0, 0, 1, 0, 0])
    assert expected_calibration_error(proba, y, 15) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.5)
    assert expected_calibration_error(np.eye(3), np.arange(3)) == pytest.approx(0.0)


def test_fit_rejects_bad_input():
    with pytest.raises(EvaluationError):
        fit_temperature(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(EvaluationError):
        fit_temperature(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(EvaluationError):
        scale(np.zeros((1, 2)), 0.0)


def test_cv_evaluation_and_report_carry_the_temperature(tmp_path):
    from ser.evaluate.cv_report import cv_evaluation, write_cv_report

    z, y = _calibrated(240, k=4, seed=4)
    ids = [f"u{i}" for i in range(len(y))]
    outputs = [SimpleNamespace(proba=scale(2.0 * z[i::2], 1.0), y=y[i::2], utt_ids=ids[i::2]) for i in range(2)]
    manifest = pd.DataFrame({"utt_id": ids, "speaker": [f"s{i % 6}" for i in range(len(y))]})
    manifest["gender"] = ["female" if i % 2 else "male" for i in range(len(y))]
    ev = cv_evaluation(outputs, manifest, ["a", "b", "c", "d"], n_boot=0)
    cal = ev["calibration"]
    assert cal["n"] == 240 and cal["temperature"] > 1.2  # the probabilities were made over-confident
    write_cv_report(tmp_path, ev, title="t")
    md = (tmp_path / "report.md").read_text()
    assert "Temperature scaling: T = " in md and "cross-fitted by fold" in md
