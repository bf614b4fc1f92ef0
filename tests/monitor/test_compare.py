"""`ser monitor compare`: agreement of the served and the shadow model on the same answers, and their live UAR on
the answers that got feedback, computed exactly as from the labels directly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ser.evaluate.metrics import uar_score
from ser.monitor.compare import compare, pair
from ser.monitor.feedback import FeedbackRecord, append_feedback
from ser.monitor.ids import new_id
from ser.monitor.log import append_records, build_record, read_log

LABELS = ["angry", "happy", "neutral", "sad"]


def _rec(pid: str, label: str, role: str, version: str):
    probs = [0.1] * 4
    probs[LABELS.index(label)] = 0.7
    return build_record(
        route="/v1/predict",
        model_name="ser-emotion",
        model_version=version,
        probabilities=probs,
        labels=LABELS,
        duration_s=3.0,
        processing_ms=5.0,
        prediction_id=pid,
        role=role,
    )


@pytest.fixture
def log_root(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    ids = [new_id() for _ in range(n)]
    truth = rng.choice(LABELS, n)
    # the served model is right 60 % of the time, the shadow 80 %: they disagree on part of the traffic
    primary = np.where(rng.random(n) < 0.6, truth, rng.choice(LABELS, n))
    shadow = np.where(rng.random(n) < 0.8, truth, rng.choice(LABELS, n))
    records = [_rec(i, p, "primary", "1") for i, p in zip(ids, primary, strict=True)]
    records += [_rec(i, s, "shadow", "2") for i, s in zip(ids[:100], shadow[:100], strict=True)]  # 100 paired
    append_records(tmp_path, records)
    append_feedback(tmp_path, [FeedbackRecord(i, str(t)) for i, t in zip(ids[:80], truth[:80], strict=True)])
    return tmp_path, ids, truth, primary, shadow


def test_compare_pairs_by_id_and_scores_both_models_on_the_same_feedback(log_root):
    root, ids, truth, primary, shadow = log_root
    predictions = read_log(root).to_pandas()
    assert len(pair(predictions)) == 100
    import pandas as pd

    res = compare(predictions, pd.Series(truth[:80], index=ids[:80]))
    assert res.paired == 100 and (res.primary_version, res.shadow_version) == ("1", "2")
    assert res.agreement == pytest.approx(float(np.mean(primary[:100] == shadow[:100])))
    lo, hi = res.agreement_ci
    assert lo <= res.agreement <= hi
    assert res.labelled == 80
    assert res.uar_primary == pytest.approx(uar_score(truth[:80], primary[:80]))
    assert res.uar_shadow == pytest.approx(uar_score(truth[:80], shadow[:80]))
    assert res.uar_shadow > res.uar_primary
    d0, d1 = res.uar_difference_ci
    assert d0 <= res.uar_shadow - res.uar_primary <= d1


def test_compare_cli(log_root, run_cli, tmp_path):
    root, *_ = log_root
    code, out, err = run_cli("monitor", "compare", "--log", root, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["paired"] == 100 and res["labelled"] == 80
    code, out, _ = run_cli("monitor", "compare", "--log", root)
    assert code == 0 and "agreement" in out and "shadow − served" in out
    code, out, _ = run_cli("monitor", "compare", "--log", tmp_path / "empty")
    assert code == 1 and "no answer" in out
