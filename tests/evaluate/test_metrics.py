"""Evaluation metrics, calibration, bootstrap CIs, fold aggregation and the written report."""

from __future__ import annotations

import json
import time

import matplotlib.image as mpimg
import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from ser.errors import SerError
from ser.evaluate import (
    EvaluationError,
    aggregate_folds,
    bootstrap_ci,
    classification_metrics,
    encode_labels,
    evaluate_predictions,
    expected_calibration_error,
    metrics_from_confusion,
    plot_confusion,
    reliability_data,
    write_report,
)
from ser.evaluate.report import CONFUSION_PNG, METRICS_JSON, RELIABILITY_PNG, REPORT_MD

CLASSES = ["angry", "happy", "sad"]
# 6 angry (all right), 3 happy (1 right, 2 → angry), 1 sad (→ happy).
Y_TRUE = ["angry"] * 6 + ["happy"] * 3 + ["sad"]
Y_PRED = ["angry"] * 6 + ["happy", "angry", "angry"] + ["happy"]


def _synthetic(n: int, acc: float = 0.7, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, predictions (right with probability ``acc``) and softmax probabilities that agree with them."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, k, n)
    p = np.where(rng.random(n) < acc, t, rng.integers(0, k, n))
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), p] += 3.0
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return t, p, proba


# ---------------------------------------------------------------------------------------------------------------
# point metrics


def test_hand_made_three_class_case():
    r = classification_metrics(Y_TRUE, Y_PRED, classes=CLASSES)
    m = r["metrics"]
    assert m["accuracy"] == pytest.approx(0.7)  # 7 of 10 right
    assert m["uar"] == pytest.approx((1 + 1 / 3 + 0) / 3)  # recalls 6/6, 1/3, 0/1
    assert m["macro_recall"] == pytest.approx(m["uar"])
    assert m["macro_precision"] == pytest.approx((6 / 8 + 1 / 2 + 0) / 3)  # precisions 6/8, 1/2, none predicted
    f1 = [2 * 6 / (6 + 8), 2 * 1 / (3 + 2), 0.0]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["weighted_f1"] == pytest.approx((6 * f1[0] + 3 * f1[1] + 1 * f1[2]) / 10)
    assert m["weighted_recall"] == pytest.approx(m["accuracy"])
    # and scikit-learn agrees
    assert m["uar"] == pytest.approx(balanced_accuracy_score(Y_TRUE, Y_PRED))
    assert m["macro_f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro", zero_division=0))
    assert r["confusion"]["counts"] == [[6, 0, 0], [2, 1, 0], [0, 1, 0]]
    assert r["confusion"]["normalized"][1] == pytest.approx([2 / 3, 1 / 3, 0.0])
    per = {c["class"]: c for c in r["per_class"]}
    assert per["angry"] == {
        "class": "angry",
        "precision": 0.75,
        "recall": 1.0,
        "f1": pytest.approx(6 / 7),
        "support": 6,
    }
    assert per["sad"]["precision"] == 0.0 and per["sad"]["recall"] == 0.0 and per["sad"]["support"] == 1


def test_integer_indices_and_names_give_the_same_result():
    idx_true = [CLASSES.index(c) for c in Y_TRUE]
    idx_pred = [CLASSES.index(c) for c in Y_PRED]
    by_name = classification_metrics(Y_TRUE, Y_PRED, classes=CLASSES)
    by_index = classification_metrics(np.array(idx_true), np.array(idx_pred), classes=CLASSES)
    assert by_name == by_index
    # integer class labels are matched by value, not position
    ints = classification_metrics([3, 1, 3], [3, 3, 3], classes=[3, 1])
    assert ints["classes"] == [3, 1] and ints["confusion"]["counts"] == [[2, 0], [1, 0]]
    # without a class list the sorted labels seen are used
    assert classification_metrics(Y_TRUE, Y_PRED)["classes"] == CLASSES


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_absent_class_in_fold():
    classes = ["angry", "happy", "neutral", "sad"]
    y_true = ["angry", "angry", "happy", "happy", "sad", "sad"]
    y_pred = ["angry", "neutral", "happy", "angry", "sad", "sad"]  # neutral predicted once but never true
    r = classification_metrics(y_true, y_pred, classes=classes)
    present = ["angry", "happy", "sad"]
    assert r["metrics"]["uar"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))  # (1/2 + 1/2 + 1) / 3
    assert r["metrics"]["uar"] == pytest.approx(2 / 3)
    p, rc, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=present, average="macro", zero_division=0)
    assert r["metrics"]["macro_precision"] == pytest.approx(p)
    assert r["metrics"]["macro_recall"] == pytest.approx(rc) == pytest.approx(r["metrics"]["uar"])
    assert r["metrics"]["macro_f1"] == pytest.approx(f)
    neutral = r["per_class"][2]
    assert neutral == {"class": "neutral", "precision": 0.0, "recall": None, "f1": None, "support": 0}
    assert np.array(r["confusion"]["counts"]).shape == (4, 4)
    assert r["confusion"]["counts"][2] == [0, 0, 0, 0]
    assert r["confusion"]["normalized"][2] == [None, None, None, None]
    json.dumps(r)  # JSON-ready


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_metrics_from_confusion_match_sklearn():
    rng = np.random.default_rng(3)
    for _ in range(20):
        t = rng.integers(0, 5, 60)
        t[t == 4] = 0  # class 4 never true
        p = rng.integers(0, 5, 60)
        cm = confusion_matrix(t, p, labels=range(5))
        got = metrics_from_confusion(cm)
        present = sorted(set(t))
        assert got["accuracy"] == pytest.approx(accuracy_score(t, p))
        assert got["uar"] == pytest.approx(balanced_accuracy_score(t, p))
        assert got["macro_f1"] == pytest.approx(f1_score(t, p, labels=present, average="macro", zero_division=0))
    batch = metrics_from_confusion(np.stack([cm, 2 * cm]))
    assert batch["uar"].shape == (2,) and batch["uar"][0] == pytest.approx(batch["uar"][1])


def test_bad_input_raises_one_line_ser_errors():
    with pytest.raises(EvaluationError, match="not in classes"):
        classification_metrics(["angry", "bored"], ["angry", "angry"], classes=CLASSES)
    with pytest.raises(EvaluationError, match="y_true has 1 labels but y_pred has 2"):
        classification_metrics(["angry"], ["angry", "sad"], classes=CLASSES)
    with pytest.raises(EvaluationError, match="out of range"):
        encode_labels([0, 5], CLASSES)
    with pytest.raises(EvaluationError, match="duplicates"):
        classification_metrics(["a"], ["a"], classes=["a", "a"])
    with pytest.raises(EvaluationError, match="empty"):
        classification_metrics([], [], classes=CLASSES)
    with pytest.raises(EvaluationError, match="shape"):
        evaluate_predictions(Y_TRUE, Y_PRED, np.full((10, 2), 0.5), classes=CLASSES, n_boot=0)
    with pytest.raises(EvaluationError, match="sum to 1"):
        evaluate_predictions(Y_TRUE, Y_PRED, np.ones((10, 3)) / 2, classes=CLASSES, n_boot=0)
    with pytest.raises(EvaluationError, match="logits"):
        evaluate_predictions(Y_TRUE, Y_PRED, np.full((10, 3), 3.0) - [[2.0, 2.5, 4.5]], classes=CLASSES, n_boot=0)
    assert issubclass(EvaluationError, SerError)


# ---------------------------------------------------------------------------------------------------------------
# calibration


def test_ece_zero_for_perfect_confident_predictions():
    t = np.array([0, 1, 2, 1, 0])
    proba = np.eye(3)[t]
    assert expected_calibration_error(proba, t) == 0.0
    data = reliability_data(proba, t)
    assert data["n_bins"] == 15 and len(data["bins"]) == 15
    assert data["bins"][-1]["count"] == 5 and data["bins"][-1]["accuracy"] == 1.0
    assert data["bins"][0]["accuracy"] is None  # empty bin


def test_ece_hand_computed():
    # 5 bins of width 0.2. Confidences / correct: 0.9 ✓ (bin 4), 0.8 ✗ and 0.7 ✓ (bin 3), 0.55 ✓ (bin 2).
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.55, 0.45], [0.3, 0.7]])
    y = np.array([0, 1, 0, 1])
    # bin 4: |1 - 0.9| · 1/4; bin 3: |0.5 - 0.75| · 2/4; bin 2: |1 - 0.55| · 1/4
    expected = 0.25 * 0.1 + 0.5 * 0.25 + 0.25 * 0.45
    assert expected_calibration_error(proba, y, n_bins=5) == pytest.approx(expected)
    data = reliability_data(proba, ["a", "b", "a", "b"], n_bins=5, classes=["a", "b"])
    assert data["ece"] == pytest.approx(expected)
    assert [b["count"] for b in data["bins"]] == [0, 0, 1, 2, 1]
    assert data["bins"][3]["accuracy"] == pytest.approx(0.5) and data["bins"][3]["confidence"] == pytest.approx(0.75)
    assert data["mce"] == pytest.approx(0.45)


# ---------------------------------------------------------------------------------------------------------------
# bootstrap


def test_bootstrap_contains_estimate_and_is_deterministic():
    t, p, _ = _synthetic(600)
    ci = bootstrap_ci(t, p, classes=range(4), n_boot=1000, seed=7)
    point = classification_metrics(t, p, classes=range(4))["metrics"]
    for name in ("accuracy", "uar", "macro_f1"):
        assert ci[name]["estimate"] == pytest.approx(point[name])
        assert ci[name]["low"] < ci[name]["estimate"] < ci[name]["high"]
    assert ci["method"] == "utterance" and ci["n_boot"] == 1000 and ci["level"] == 0.95
    assert bootstrap_ci(t, p, classes=range(4), n_boot=1000, seed=7) == ci
    assert bootstrap_ci(t, p, classes=range(4), n_boot=1000, seed=8) != ci


def test_bootstrap_narrows_with_more_data():
    small = bootstrap_ci(*_synthetic(200)[:2], n_boot=1000)
    large = bootstrap_ci(*_synthetic(5000)[:2], n_boot=1000)
    for name in ("accuracy", "uar", "macro_f1"):
        assert large[name]["high"] - large[name]["low"] < 0.5 * (small[name]["high"] - small[name]["low"])


def test_bootstrap_matches_naive_index_resampling():
    t, p, _ = _synthetic(500, seed=1)
    ci = bootstrap_ci(t, p, n_boot=4000, seed=0)
    rng = np.random.default_rng(123)
    idx = rng.integers(0, len(t), size=(4000, len(t)))
    naive = np.quantile((t[idx] == p[idx]).mean(axis=1), [0.025, 0.975])
    assert ci["accuracy"]["low"] == pytest.approx(naive[0], abs=0.01)
    assert ci["accuracy"]["high"] == pytest.approx(naive[1], abs=0.01)


def test_speaker_bootstrap_wider_on_speaker_correlated_data():
    rng = np.random.default_rng(0)
    n_spk, per = 20, 100
    speakers = np.repeat([f"s{i}" for i in range(n_spk)], per)
    spk_acc = np.repeat(np.where(np.arange(n_spk) % 2 == 0, 0.9, 0.3), per)  # easy and hard speakers
    t = rng.integers(0, 4, n_spk * per)
    p = np.where(rng.random(len(t)) < spk_acc, t, (t + 1) % 4)
    utt = bootstrap_ci(t, p, n_boot=1000)
    spk = bootstrap_ci(t, p, speakers=speakers, n_boot=1000)
    assert spk["method"] == "speaker" and spk["n_clusters"] == n_spk
    for name in ("accuracy", "uar", "macro_f1"):
        assert spk[name]["estimate"] == pytest.approx(utt[name]["estimate"])
        assert spk[name]["high"] - spk[name]["low"] > 2 * (utt[name]["high"] - utt[name]["low"])
    with pytest.raises(EvaluationError, match="speakers"):
        bootstrap_ci(t, p, speakers=speakers[:10])
    with pytest.raises(EvaluationError, match="missing"):
        bootstrap_ci(t, p, speakers=np.where(np.arange(len(t)) == 5, None, speakers))


def test_evaluate_predictions_is_fast_and_json_ready():
    t, p, proba = _synthetic(4000)
    p = proba.argmax(axis=1)
    speakers = np.arange(4000) % 40
    start = time.perf_counter()
    r = evaluate_predictions(t, p, proba, classes=["a", "b", "c", "d"], speakers=speakers, n_boot=1000, seed=0)
    assert time.perf_counter() - start < 1.0
    assert list(r) == ["n", "classes", "metrics", "ci", "per_class", "confusion", "calibration"]
    assert r["metrics"]["ece"] == pytest.approx(expected_calibration_error(proba, t))
    assert r["ci"]["method"] == "speaker" and r["calibration"]["n_bins"] == 15
    assert json.loads(json.dumps(r)) == r
    bare = evaluate_predictions(t, p, classes=["a", "b", "c", "d"], n_boot=0)
    assert bare["ci"] is None and bare["calibration"] is None and bare["metrics"]["ece"] is None


# ---------------------------------------------------------------------------------------------------------------
# cross-validation


def test_aggregate_folds_mean_std_and_pooled_confusion():
    folds_data = [
        (["a", "a", "b", "b"], ["a", "a", "b", "b"]),  # accuracy 1.0, UAR 1.0
        (["a", "a", "b", "b"], ["a", "b", "b", "b"]),  # accuracy 0.75, UAR 0.75
        (["a", "a", "a", "b"], ["b", "b", "a", "b"]),  # accuracy 0.5, UAR (1/3 + 1) / 2
    ]
    folds = [evaluate_predictions(t, p, classes=["a", "b"], n_boot=0) for t, p in folds_data]
    agg = aggregate_folds(folds, names=["f1", "f2", "f3"])
    assert agg["n_folds"] == 3 and agg["std_ddof"] == 1
    acc = agg["metrics"]["accuracy"]
    assert acc["values"] == [1.0, 0.75, 0.5]
    assert acc["mean"] == pytest.approx(0.75)
    assert acc["std"] == pytest.approx(0.25)  # sqrt(((0.25)² + 0 + (0.25)²) / 2)
    uars = [1.0, 0.75, (1 / 3 + 1) / 2]
    assert agg["metrics"]["uar"]["mean"] == pytest.approx(np.mean(uars))
    assert agg["metrics"]["uar"]["std"] == pytest.approx(np.std(uars, ddof=1))
    assert 0 <= agg["metrics"]["uar"]["mean"] <= 1
    assert "ece" not in agg["metrics"]  # no fold had probabilities
    assert agg["confusion"]["counts"] == [[4, 3], [0, 5]]
    assert agg["pooled"]["accuracy"] == pytest.approx(9 / 12)
    assert agg["pooled"]["uar"] == pytest.approx((4 / 7 + 1) / 2)
    assert [f["fold"] for f in agg["per_fold"]] == ["f1", "f2", "f3"]
    assert agg["per_fold"][2]["uar"] == pytest.approx(uars[2])
    single = aggregate_folds(folds[:1])
    assert single["metrics"]["accuracy"]["std"] is None
    with pytest.raises(EvaluationError, match="classes"):
        aggregate_folds([folds[0], evaluate_predictions(["a"], ["c"], classes=["a", "c"], n_boot=0)])
    with pytest.raises(EvaluationError, match="no fold"):
        aggregate_folds([])


# ---------------------------------------------------------------------------------------------------------------
# report


def _is_png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_write_report_files_and_numbers(tmp_path):
    from ser.evaluate import group_metrics

    t, p, proba = _synthetic(300, k=3)
    p = proba.argmax(axis=1)
    classes = ["angry", "happy", "sad"]
    speakers = np.arange(300) % 12
    result = evaluate_predictions(t, p, proba, classes=classes, speakers=speakers, n_boot=500)
    folds = [evaluate_predictions(t[i::3], p[i::3], proba[i::3], classes=classes, n_boot=0) for i in range(3)]
    cv = aggregate_folds(folds)
    import pandas as pd

    groups = pd.DataFrame({"gender": np.where(np.arange(300) % 2, "male", "female"), "corpus": "ravdess"})
    fairness = group_metrics(t, p, groups, classes=classes)
    out = tmp_path / "run" / "eval"
    paths = write_report(out, result, cv=cv, fairness=fairness, meta={"model": "svm-rbf"})
    assert set(paths) == {"json", "markdown", "confusion", "reliability"}
    for name in (METRICS_JSON, REPORT_MD, CONFUSION_PNG, RELIABILITY_PNG):
        assert (out / name).is_file()
    assert not [f for f in out.iterdir() if f.name.startswith(".")]  # no temp files left

    saved = json.loads((out / METRICS_JSON).read_text())
    assert saved["overall"] == result and saved["cross_validation"] == cv and saved["fairness"] == fairness
    assert saved["meta"] == {"model": "svm-rbf"}

    md = (out / REPORT_MD).read_text()
    m, ci = result["metrics"], result["ci"]
    for value in (m["accuracy"], m["uar"], m["macro_f1"], m["ece"], ci["uar"]["low"], ci["uar"]["high"]):
        assert f"{value:.4f}" in md
    assert "over 12 speakers" in md
    assert f"{cv['metrics']['uar']['mean']:.4f} ± {cv['metrics']['uar']['std']:.4f}" in md
    assert f"{fairness['attributes']['gender']['gap']['accuracy']:.4f}" in md
    assert f"| happy | {result['per_class'][1]['precision']:.4f}" in md
    assert "![Confusion matrix](confusion_matrix.png)" in md and "(reliability.png)" in md
    assert "svm-rbf" in md

    for name in (CONFUSION_PNG, RELIABILITY_PNG):
        assert _is_png(out / name)
        image = mpimg.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
        assert image[..., :3].std() > 0.05  # not a blank canvas


def test_report_without_probabilities(tmp_path):
    result = evaluate_predictions(Y_TRUE, Y_PRED, classes=CLASSES, n_boot=200)
    (tmp_path / RELIABILITY_PNG).write_bytes(b"stale")
    paths = write_report(tmp_path, result)
    assert "reliability" not in paths and not (tmp_path / RELIABILITY_PNG).exists()
    md = (tmp_path / REPORT_MD).read_text()
    assert "calibration was not measured" in md and "0.7000" in md and "0.4444" in md
    assert "Cross-validation" not in md and "Per group" not in md
    with pytest.raises(EvaluationError):
        write_report(tmp_path / REPORT_MD, result)


def test_plot_confusion_handles_empty_rows(tmp_path):
    path = plot_confusion([[3, 1, 0], [0, 0, 0], [1, 0, 5]], ["a", "b", "c"], tmp_path / "cm.png")
    assert _is_png(path)
    with pytest.raises(EvaluationError, match="3x3"):
        plot_confusion([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "bad.png")
