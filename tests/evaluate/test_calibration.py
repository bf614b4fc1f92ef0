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


def test_cross_fitted_temperatures_leave_the_fold_out():
    from ser.evaluate.calibration import cross_fitted_temperatures

    z, y = _calibrated(1800, seed=5)
    folds = {k: (scale(2.0 * z[k::3], 1.0), y[k::3]) for k in range(3)}
    ts = cross_fitted_temperatures(folds)
    assert list(ts) == [0, 1, 2]
    for k, t in ts.items():
        rest = [i for i in folds if i != k]
        pooled = np.concatenate([logits_of(folds[i][0]) for i in rest]), np.concatenate([folds[i][1] for i in rest])
        assert t == pytest.approx(fit_temperature(*pooled)) and t == pytest.approx(2.0, rel=0.15)
    # the per-fold temperatures reproduce temperature_scaling's cross-fitted after-figures
    block = temperature_scaling([folds[k] for k in range(3)])
    after = np.concatenate([scale(logits_of(folds[k][0]), ts[k]) for k in range(3)])
    assert expected_calibration_error(after, np.concatenate([folds[k][1] for k in range(3)])) == pytest.approx(
        block["ece_after"]
    )
    # a fold the mapping lacks (a degraded run's fold with no clean twin) is fitted on every fold
    assert cross_fitted_temperatures(folds, [7])[7] == pytest.approx(block["temperature"])
    with pytest.raises(EvaluationError, match="no fold other"):
        cross_fitted_temperatures({0: folds[0]})


def test_paired_ece_bootstrap_matches_the_point_figures_and_pairs_the_draws():
    from ser.evaluate.calibration import paired_ece_bootstrap

    z, y = _calibrated(2400, seed=6)
    speakers = np.repeat(np.arange(24), 100)
    over, fair = scale(3.0 * z, 1.0), scale(z, 1.0)
    b = paired_ece_bootstrap(over, fair, y, speakers, n_boot=300)
    assert b["n_clusters"] == 24 and b["n"] == 2400 and b["method"] == "speaker"
    assert b["ece"]["before"] == pytest.approx(expected_calibration_error(over, y))
    assert b["ece"]["after"] == pytest.approx(expected_calibration_error(fair, y))
    assert b["nll"]["before"] == pytest.approx(nll(3.0 * z, y)) and b["nll"]["after"] == pytest.approx(nll(z, y))
    assert b["nll"]["after_ci"][0] <= b["nll"]["after"] <= b["nll"]["after_ci"][1]
    # ECE is biased upwards under resampling (|sum| of noise): near 0 the percentile interval may sit above it
    assert b["ece"]["after"] < b["ece"]["after_ci"][1]
    for m in ("ece", "nll"):
        r = b[m]
        assert r["before_ci"][0] <= r["before"] <= r["before_ci"][1]
        assert r["diff"] < 0 and r["diff_ci"][1] < 0 and r["p_not_better"] == 0.0  # calibrated is clearly better
    same = paired_ece_bootstrap(over, over, y, speakers, n_boot=100)
    assert same["ece"]["diff"] == 0.0 and same["ece"]["diff_ci"] == [0.0, 0.0] and same["ece"]["p_not_better"] == 1.0
    # speakers who differ (half of them far over-confident): resampling speakers sees that, resampling clips does not
    mixed = scale(z * np.where(speakers % 2, 5.0, 1.0)[:, None], 1.0)
    width = lambda r: r["ece"]["before_ci"][1] - r["ece"]["before_ci"][0]  # noqa: E731
    by_speaker = paired_ece_bootstrap(mixed, fair, y, speakers, n_boot=300)
    by_clip = paired_ece_bootstrap(mixed, fair, y, np.arange(2400), n_boot=300)
    assert by_clip["n_clusters"] == 2400 and width(by_speaker) > 1.5 * width(by_clip)
    with pytest.raises(EvaluationError):
        paired_ece_bootstrap(over, fair[:10], y, speakers)


def test_abstention_curve_scores_only_the_answered_clips():
    from ser.evaluate.calibration import abstention_curve

    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.55, 0.45], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1, 0])  # right, wrong, right, wrong, wrong
    rows = abstention_curve(proba, y, [0.0, 0.65, 0.75, 0.95])
    assert [r["coverage"] for r in rows] == [1.0, 0.6, 0.4, 0.0]
    assert rows[0]["accuracy"] == pytest.approx(0.4) and rows[0]["n_answered"] == 5
    assert rows[1]["accuracy"] == pytest.approx(2 / 3) and rows[1]["uar"] == pytest.approx(0.75)  # 0: 1/1, 1: 1/2
    assert rows[2]["accuracy"] == 0.5 and rows[2]["uar"] == 0.5
    assert rows[3] == {"threshold": 0.95, "coverage": 0.0, "n_answered": 0, "accuracy": None, "uar": None}
    assert abstention_curve(proba, y, [0.6])[0]["coverage"] == 0.8  # 0.6 itself is answered (abstain *below*)
