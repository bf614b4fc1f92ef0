"""The paired speaker bootstrap of a metric difference between two models on the same utterances."""

from __future__ import annotations

import numpy as np
import pytest

from ser.evaluate.metrics import EvaluationError, bootstrap_ci, paired_bootstrap_diff, uar_score

CLASSES = ["angry", "happy", "neutral", "sad"]


def _data(seed: int, n_spk: int = 12, per: int = 20, acc_a: float = 0.8, acc_b: float = 0.5):
    rng = np.random.default_rng(seed)
    y = rng.choice(CLASSES, n_spk * per)
    spk = np.repeat([f"s{i}" for i in range(n_spk)], per)

    def answers(acc):
        wrong = rng.choice(CLASSES, len(y))
        return np.where(rng.random(len(y)) < acc, y, wrong)

    return y, answers(acc_a), answers(acc_b), spk


def test_point_difference_is_exact_and_the_ci_brackets_it():
    y, a, b, spk = _data(0)
    out = paired_bootstrap_diff(y, a, b, spk, classes=CLASSES, n_boot=500, seed=1)
    u = out["uar"]
    assert u["a"] == pytest.approx(uar_score(y, a)) and u["b"] == pytest.approx(uar_score(y, b))
    assert u["diff"] == pytest.approx(u["a"] - u["b"])
    assert u["low"] < u["diff"] < u["high"] and u["low"] > 0  # 0.8 vs 0.5 accuracy: clearly better
    assert u["p_not_better"] == 0.0 and out["n_clusters"] == 12 and out["method"] == "speaker"
    assert paired_bootstrap_diff(y, a, b, spk, classes=CLASSES, n_boot=500, seed=1) == out  # seeded


def test_pairing_makes_the_interval_of_a_difference_much_narrower_than_unpaired_intervals_suggest():
    y, a, _, spk = _data(2, acc_a=0.7)
    rng = np.random.default_rng(5)
    b = a.copy()  # the same model with 3 % of its answers changed: a tiny, correlated difference
    flip = rng.random(len(b)) < 0.03
    b[flip] = rng.choice(CLASSES, int(flip.sum()))
    d = paired_bootstrap_diff(y, a, b, spk, classes=CLASSES, n_boot=1000, seed=0)["uar"]
    widths = [
        (ci["high"] - ci["low"])
        for ci in (bootstrap_ci(y, p, classes=CLASSES, speakers=spk, n_boot=1000, seed=0)["uar"] for p in (a, b))
    ]
    unpaired = float(np.hypot(*widths))  # the width two independent intervals would give the difference
    assert d["high"] - d["low"] < 0.5 * unpaired


def test_same_answers_give_a_zero_difference_and_bad_input_is_refused():
    y, a, _, spk = _data(3)
    d = paired_bootstrap_diff(y, a, a, spk, classes=CLASSES, n_boot=100)["uar"]
    assert d["diff"] == 0 and d["low"] == 0 and d["high"] == 0 and d["p_not_better"] == 1.0
    with pytest.raises(EvaluationError, match="speakers"):
        paired_bootstrap_diff(y, a, a, spk[:-1], classes=CLASSES)
    with pytest.raises(EvaluationError, match="n_boot"):
        paired_bootstrap_diff(y, a, a, spk, classes=CLASSES, n_boot=0)
