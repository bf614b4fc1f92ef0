"""PSI / KS / category mixes / shares on synthetic distributions, and the thresholds' config."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp

from ser.errors import ConfigError
from ser.monitor.drift import (
    CategoricalDrift,
    ContinuousDrift,
    DriftConfig,
    ks_pvalue,
    psi,
    quantile_edges,
    share_shift,
)

CFG = DriftConfig()


def compare(ref, live, cfg=CFG, chunks=3):
    acc = ContinuousDrift("x", ref, cfg)
    for part in np.array_split(np.asarray(live), chunks):
        acc.update(part)
    return acc


def test_psi_basics():
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    assert psi([50, 50], [90, 10]) == pytest.approx(0.4 * np.log(0.9 / 0.5) + (-0.4) * np.log(0.1 / 0.5))
    assert psi([100, 0], [50, 50]) > 1  # an empty bin gets epsilon, not a division by zero
    assert np.isnan(psi([0, 0], [1, 1]))


@pytest.mark.parametrize("seed", range(6))
def test_streamed_ks_is_scipys(seed):
    rng = np.random.default_rng(seed)
    if seed % 2:  # heavy ties on both sides
        ref, live = rng.integers(0, 6, 300).astype(float), rng.integers(-1, 7, 20_000).astype(float)
    else:
        ref, live = rng.normal(size=500), rng.normal(0.1, size=20_000)
    acc = compare(ref, live, chunks=7)
    r = acc.result()
    exact = ks_2samp(ref, live)
    assert r["ks"] == pytest.approx(exact.statistic, abs=1e-12)
    assert r["ks_p"] == pytest.approx(exact.pvalue, rel=1e-9, abs=1e-300)  # > 10,000 live: scipy's asymptotic p
    edges = quantile_edges(ref, CFG.bins)
    assert (
        acc.live_bins().tolist() == np.bincount(np.searchsorted(edges, live, "left"), minlength=edges.size + 1).tolist()
    )


def test_small_samples_use_scipys_exact_p():
    rng = np.random.default_rng(1)
    ref, live = rng.normal(size=200), rng.normal(size=150)
    r = compare(ref, live).result()
    assert r["ks_p"] == pytest.approx(ks_2samp(ref, live).pvalue)
    assert ks_pvalue(0.0, 10, 10) == pytest.approx(1.0)


def test_no_drift_stays_below_thresholds_and_a_shift_is_flagged():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=2000)
    same = compare(ref, rng.normal(size=50_000)).result()
    assert same["status"] == "ok" and same["psi"] < 0.02 and same["ks"] < 0.05
    shifted = compare(ref, rng.normal(0.5, 1.0, size=50_000)).result()
    assert shifted["flagged"] and shifted["psi"] >= CFG.psi and shifted["ks"] >= CFG.ks
    assert any("PSI" in w for w in shifted["why"]) and any("KS" in w for w in shifted["why"])


def test_effect_size_decides_at_large_n():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=20_000)
    tiny = compare(ref, rng.normal(0.06, 1.0, size=200_000)).result()
    assert tiny["ks_p"] < 1e-3  # significant ...
    assert tiny["status"] == "ok"  # ... but too small a shift to flag


def test_small_windows_are_guarded_by_significance_and_minimum_size():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=60)
    noisy = compare(ref, rng.normal(size=40)).result()
    assert noisy["psi"] > 0.1  # PSI is biased upwards on small samples ...
    assert noisy["status"] == "ok"  # ... the tests keep it from flagging
    few = compare(ref, rng.normal(3.0, size=10)).result()
    assert few["status"] == "insufficient" and not few["flagged"]


def test_nan_values_are_dropped_and_counted():
    acc = ContinuousDrift("x", np.array([1.0, 2.0, np.nan, 3.0]), CFG)
    acc.update(np.array([np.nan, 2.0, np.inf]))
    r = acc.result()
    assert r["n_reference"] == 3 and r["n_live"] == 1 and r["missing_live"] == 2


def test_categorical_mix():
    cfg = DriftConfig()
    same = CategoricalDrift("label", ["a"] * 500 + ["b"] * 500, cfg)
    same.update(["a"] * 5100 + ["b"] * 4900)
    assert same.result()["status"] == "ok"
    moved = CategoricalDrift("label", ["a"] * 500 + ["b"] * 500, cfg, order=["a", "b", "c"])
    moved.update_counts({"a": 8000, "b": 1500, None: 500})
    r = moved.result()
    assert r["flagged"] and r["categories"] == ["a", "b", "c", "(none)"]
    assert r["live"] == pytest.approx([0.8, 0.15, 0.0, 0.05])
    info = CategoricalDrift("codec", ["PCM_16"] * 100, cfg, flag=False)
    info.update(["MP3"] * 100)
    assert not info.result()["flagged"] and info.result()["status"] == "shifted (not flagged)"


def test_share_shift():
    assert share_shift("silence", 10, 1000, 300, 1000, CFG)["flagged"]
    assert not share_shift("silence", 10, 1000, 60, 1000, CFG)["flagged"]  # +5 points: below max_increase
    assert not share_shift("silence", 100, 1000, 80, 1000, CFG)["flagged"]  # a drop is not a problem
    assert share_shift("silence", 10, 1000, 10, 10, CFG)["status"] == "insufficient"


def test_config_from_yaml(tmp_path):
    p = tmp_path / "drift.yaml"
    p.write_text("psi: 0.25\nks: 0.15\nquality:\n  low_snr_below: 12\n")
    cfg = DriftConfig.from_yaml(p)
    assert (cfg.psi, cfg.ks, cfg.quality.low_snr_below, cfg.alpha) == (0.25, 0.15, 12.0, 0.01)
    assert DriftConfig.from_yaml(None) == DriftConfig()
    p.write_text("psi: -1\n")
    with pytest.raises(ConfigError, match="psi"):
        DriftConfig.from_yaml(p)
    p.write_text("unknown: 1\n")
    with pytest.raises(ConfigError, match="unknown"):
        DriftConfig.from_yaml(p)
    with pytest.raises(ConfigError, match="not found"):
        DriftConfig.from_yaml(tmp_path / "missing.yaml")
