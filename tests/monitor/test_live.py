"""ser.monitor.live: sliding-window PSI equals the report's PSI on the same values, the window forgets, flags need
size and significance, live UAR equals ser.evaluate's, and the wrapper publishes and retires versions."""

from __future__ import annotations

import numpy as np
import pytest

from ser.evaluate.metrics import uar_score
from ser.monitor.drift import MISSING, DriftConfig, psi, quantile_edges
from ser.monitor.live import LIVE_STATISTICS, LiveAccuracy, LiveDrift, LiveMonitor, uar

LABELS = ["a", "b", "c"]


def reference(n: int = 500, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "rms_dbfs": rng.normal(-25, 4, n),
        "peak_dbfs": rng.normal(-5, 2, n),
        "snr_db": rng.normal(60, 10, n),
        "speech_fraction": rng.uniform(0.4, 0.9, n),
        "clipped_fraction": np.zeros(n),
        "high_band_share": rng.uniform(0.02, 0.1, n),
        "confidence": rng.uniform(0.3, 1.0, n),
        "label": list(rng.choice(LABELS, n)),
    }


def live_values(ref: dict, i: int, shift: float = 0.0) -> dict:
    return {k: (v[i] if k == "label" else v[i] + shift) for k, v in ref.items()}


def test_psi_of_the_window_equals_the_reports_psi():
    ref, live = reference(), reference(seed=1)
    d = LiveDrift(ref, LABELS, window=200)
    for i in range(300):
        d.add(live_values(live, i))
    snap = d.snapshot()
    assert snap.window == 200 and set(snap.psi) == set(LIVE_STATISTICS)
    cfg = DriftConfig()
    for stat, col in (("rms_dbfs", "rms_dbfs"), ("highband_share", "high_band_share")):
        edges = quantile_edges(ref[col], cfg.bins)
        r = np.bincount(np.searchsorted(edges, ref[col], "left"), minlength=edges.size + 1)
        q = np.bincount(np.searchsorted(edges, live[col][100:300], "left"), minlength=edges.size + 1)
        assert snap.psi[stat] == pytest.approx(psi(r, q, cfg.epsilon))
    cats = [*LABELS, MISSING]
    r = np.array([ref["label"].count(c) for c in cats])
    q = np.array([list(live["label"][100:300]).count(c) for c in cats])
    assert snap.psi["label_mix"] == pytest.approx(psi(r, q, cfg.epsilon))
    assert snap.flagged == ()  # same distribution


def test_window_forgets_and_shift_is_flagged():
    ref, live = reference(), reference(seed=2)
    d = LiveDrift(ref, LABELS, window=100)
    for i in range(100):
        d.add(live_values(live, i, shift=30.0))  # every continuous statistic far off
    shifted = d.snapshot()
    assert {"rms_dbfs", "snr_db", "confidence"} <= set(shifted.flagged)
    for i in range(100, 200):
        d.add(live_values(live, i))
    assert d.snapshot().flagged == ()  # the shifted answers left the window


def test_too_few_answers_are_never_flagged_and_missing_values_are_skipped():
    ref, live = reference(), reference(seed=3)
    d = LiveDrift(ref, LABELS, window=100)
    for i in range(DriftConfig().min_live - 1):
        d.add(live_values(live, i, shift=30.0))
    assert d.snapshot().flagged == ()
    d2 = LiveDrift(ref, LABELS, window=10)
    d2.add({"rms_dbfs": None, "confidence": float("nan"), "label": None})
    snap = d2.snapshot()
    assert snap.window == 1 and "rms_dbfs" not in snap.psi and snap.n["label_mix"] == 1  # no label: (none)


def test_statistics_without_enough_reference_are_left_out():
    ref = reference(n=20)
    d = LiveDrift(ref, LABELS)
    assert d.stats == ()


def test_live_uar_equals_uar_score():
    rng = np.random.default_rng(0)
    truth = list(rng.choice(LABELS, 200))
    pred = [t if rng.random() < 0.6 else str(rng.choice(LABELS)) for t in truth]
    assert uar(truth, pred) == pytest.approx(uar_score(truth, pred))
    acc = LiveAccuracy(window=150)
    for i, (t, p) in enumerate(zip(truth, pred, strict=True)):
        acc.predicted(f"id{i}", "3", p)
        assert acc.feedback(f"id{i}", t)
    u, n = acc.snapshot()["3"]
    assert n == 150 and u == pytest.approx(uar_score(truth[50:], pred[50:]))
    assert not acc.feedback("unknown", "a")
    acc.predicted("nolabel", "3", None)
    assert not acc.feedback("nolabel", "a")


def test_live_accuracy_forgets_old_ids_and_latest_feedback_wins():
    acc = LiveAccuracy(max_ids=2)
    for i in range(3):
        acc.predicted(f"id{i}", "1", "a")
    assert not acc.feedback("id0", "a")
    acc.feedback("id1", "b")
    acc.feedback("id1", "a")
    assert acc.snapshot()["1"] == (1.0, 1)


def test_monitor_publishes_and_retires_versions():
    drift, accs = [], []
    m = LiveMonitor(lambda v, s: drift.append((v, s)), accs.append, window=50, interval_s=0.01)

    class Ref:
        def __init__(self, d):
            import pyarrow as pa

            self.table = pa.table(d)

        def column(self, name):
            return np.asarray(self.table[name].to_numpy(zero_copy_only=False), dtype=np.float64)

    m.set_model("1", Ref(reference()), LABELS)
    for i in range(40):
        m.observe("1", live_values(reference(seed=5), i))
    m.observe("2", {"rms_dbfs": 0.0})  # not the watched version: ignored
    m.recompute()
    assert drift[-1][0] == "1" and drift[-1][1].window == 40
    m.set_model("2", None, LABELS)
    assert ("1", None) in drift  # the old version's gauges are removed
    m.recompute()
    assert drift[-1] == ("2", None)
    m.start()
    m.close()
