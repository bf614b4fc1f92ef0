"""Augmentation: waveform transforms (SNR, gain, shift, stretch, pitch), SpecAugment masks, the eval guard."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from ser.augment import (
    AugmentConfig,
    Mask,
    WaveParams,
    add_noise,
    apply_masks,
    apply_waveform_params,
    assert_no_augmented_in_eval,
    augment_waveform,
    make_augment_config,
    mark_augmented,
    sample_masks,
    spec_augment,
)
from ser.errors import ConfigError, LeakageError
from ser.features import frames
from tests.conftest import tone

SR = 16_000
NONE = {"p_noise": 0.0, "p_gain": 0.0, "p_shift": 0.0, "p_stretch": 0.0, "p_pitch": 0.0}


def only(**kw) -> AugmentConfig:
    return AugmentConfig(**{**NONE, **kw})


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


# ---- waveform ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [0.0, 10.0, 25.0])
def test_added_noise_has_the_target_snr(target):
    y = tone(1.0)
    noisy = add_noise(y, target, rng=1)
    assert noisy.dtype == np.float32 and noisy.shape == y.shape
    assert snr_db(y, noisy) == pytest.approx(target, abs=0.01)
    assert np.array_equal(add_noise(np.zeros(100, np.float32), 10.0, 0), np.zeros(100))


def test_random_noise_snr_is_within_the_configured_range():
    y = tone(0.5)
    for seed in range(5):
        out = augment_waveform(y, SR, only(p_noise=1.0, snr_db=(12.0, 18.0)), seed)
        assert 11.99 <= snr_db(y, out) <= 18.01


def test_gain_in_db_is_exact():
    y = tone(0.5)
    out = augment_waveform(y, SR, only(p_gain=1.0, gain_db=(6.0, 6.0)), 0)
    assert np.allclose(out, y * 10 ** (6 / 20), atol=1e-6)
    level = 20 * np.log10(np.sqrt(np.mean(out**2)) / np.sqrt(np.mean(y**2)))
    assert level == pytest.approx(6.0, abs=1e-4)
    quiet = apply_waveform_params(y, SR, WaveParams(gain_db=-12.0))
    assert np.allclose(quiet, y * 10 ** (-12 / 20), atol=1e-6)


def test_time_shift_delays_and_zero_fills():
    y = tone(0.5)
    out = apply_waveform_params(y, SR, WaveParams(shift_samples=160, shift_fade_s=0.0))
    assert np.array_equal(out[:160], np.zeros(160)) and np.allclose(out[160:], y[:-160])
    back = apply_waveform_params(y, SR, WaveParams(shift_samples=-80, shift_fade_s=0.0, shift_rollover=True))
    assert np.allclose(back, np.roll(y, -80))
    drawn = augment_waveform(y, SR, only(p_shift=1.0, shift_s=(0.05, 0.05), shift_fade_s=0.0), 3)
    assert np.allclose(drawn[800:], y[:-800])


def test_pitch_shift_moves_f0_and_time_stretch_changes_duration():
    y = tone(1.0, freq=220.0)
    up = apply_waveform_params(y, SR, WaveParams(pitch_semitones=2.0))
    assert up.shape == y.shape
    hz, voiced, _ = frames.f0(up, SR)
    assert np.nanmedian(hz[voiced > 0]) == pytest.approx(220 * 2 ** (2 / 12), rel=0.02)
    faster = apply_waveform_params(y, SR, WaveParams(stretch_rate=1.25, keep_length=False))
    assert len(faster) == pytest.approx(len(y) / 1.25, rel=0.02)
    same_len = apply_waveform_params(y, SR, WaveParams(stretch_rate=0.8))
    assert same_len.shape == y.shape and np.all(np.isfinite(same_len))


def test_waveform_augmentation_is_deterministic_for_a_seed_and_leaves_global_state():
    cfg = AugmentConfig(p_noise=1, p_gain=1, p_shift=1, p_stretch=1, p_pitch=1)
    y = tone(0.5)
    random.seed(123)
    before = random.getstate()
    a = augment_waveform(y, SR, cfg, 7)
    assert random.getstate() == before
    b = augment_waveform(y, SR, cfg, np.random.default_rng(7))
    c = augment_waveform(y, SR, cfg, 8)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert a.shape == y.shape and a.dtype == np.float32
    assert np.array_equal(augment_waveform(y, SR, only(), 0), y)  # nothing applies


def test_augment_config_validation():
    with pytest.raises(ConfigError, match="snr_db"):
        make_augment_config({"snr_db": (30, 10)})
    with pytest.raises(ConfigError, match="p_gain"):
        make_augment_config({"p_gain": 1.5})
    with pytest.raises(ConfigError, match="mono"):
        augment_waveform(np.zeros((2, 100), np.float32), SR, AugmentConfig(), 0)


# ---- SpecAugment ---------------------------------------------------------------------------------------------


def test_masks_set_exactly_their_rows_and_columns():
    spec = np.ones((64, 100), dtype=np.float32)
    out = apply_masks(spec.copy(), [Mask("freq", 10, 5), Mask("time", 40, 7), Mask("time", 0, 0)], 0.0)
    assert np.array_equal(np.where((out == 0).all(axis=1))[0], np.arange(10, 15))
    assert np.array_equal(np.where((out == 0).all(axis=0))[0], np.arange(40, 47))
    assert (out == 0).sum() == 5 * 100 + 7 * 64 - 5 * 7


def test_spec_augment_zeroes_the_drawn_extent_and_respects_limits():
    cfg = AugmentConfig(freq_masks=2, freq_mask_max=8, time_masks=2, time_mask_max=20, mask_value="zero")
    spec = np.random.default_rng(0).uniform(1, 2, size=(64, 100)).astype(np.float32)
    for seed in range(10):
        masks = sample_masks(64, 100, cfg, np.random.default_rng(seed))
        assert len(masks) == 4
        assert all(0 <= m.width <= (8 if m.axis == "freq" else 20) for m in masks)
        out = spec_augment(spec, cfg, np.random.default_rng(seed))
        rows = set().union(*(range(m.start, m.start + m.width) for m in masks if m.axis == "freq"))
        cols = set().union(*(range(m.start, m.start + m.width) for m in masks if m.axis == "time"))
        assert set(np.where((out == 0).all(axis=1))[0]) == rows
        assert set(np.where((out == 0).all(axis=0))[0]) == cols
        assert (out == 0).sum() == len(rows) * 100 + len(cols) * 64 - len(rows) * len(cols)
        assert np.array_equal(out[out != 0], spec[out != 0])
    assert spec.min() >= 1  # the input is untouched
    short = sample_masks(64, 30, AugmentConfig(time_mask_max=100, time_mask_max_frac=0.2), 0)
    assert all(m.width <= 6 for m in short if m.axis == "time")  # at most 20 % of 30 frames


def test_spec_augment_batches_fill_values_and_probability():
    batch = np.random.default_rng(1).normal(-40, 10, size=(4, 1, 32, 50)).astype(np.float32)
    cfg = AugmentConfig(freq_masks=1, time_masks=1, freq_mask_max=6, time_mask_max=10)
    out = spec_augment(batch, cfg, 5)
    assert out.shape == batch.shape
    masked = [(out[i, 0] != batch[i, 0]) for i in range(4)]
    assert len({m.tobytes() for m in masked}) > 1  # each item gets its own masks
    for i in range(4):
        changed = out[i, 0][masked[i]]
        if changed.size:
            assert np.allclose(changed, batch[i, 0].mean(), atol=1e-4)  # mean fill
    assert np.array_equal(spec_augment(batch, cfg, 5), out)
    assert np.array_equal(spec_augment(batch, AugmentConfig(p_specaugment=0.0), 5), batch)
    with pytest.raises(ConfigError):
        spec_augment(np.zeros(10), cfg, 0)


def test_spec_augment_on_a_torch_batch_matches_numpy():
    torch = pytest.importorskip("torch")
    batch = np.random.default_rng(2).normal(size=(3, 40, 60)).astype(np.float32)
    cfg = AugmentConfig(mask_value="min")
    out_t = spec_augment(torch.from_numpy(batch.copy()), cfg, 11)
    out_n = spec_augment(batch, cfg, 11)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    assert np.array_equal(out_t.numpy(), out_n)
    assert not np.array_equal(out_n, batch)


# ---- guard ---------------------------------------------------------------------------------------------------


def test_augmented_rows_in_eval_roles_are_rejected():
    base = pd.DataFrame({"utt_id": ["a", "b"], "emotion": ["sad", "happy"]})
    train = pd.concat([mark_augmented(base, False), mark_augmented(base.assign(utt_id=["a~1", "b~1"]))])
    assert train["augmented"].dtype == bool and train["augmented"].tolist() == [False, False, True, True]
    assert_no_augmented_in_eval({"train": train, "val": mark_augmented(base, False), "test": base})
    leaked = pd.concat([base.assign(augmented=False), mark_augmented(base.iloc[:1].assign(utt_id="a~1"))])
    with pytest.raises(LeakageError, match=r"1 augmented row\(s\) in the 'test' set \(e\.g\. utt_id 'a~1'\)"):
        assert_no_augmented_in_eval({"train": train, "test": leaked})
    with pytest.raises(LeakageError, match="'val'"):
        assert_no_augmented_in_eval({"val": mark_augmented(base)})


def test_speaker_variation_of_a_robust_variant_leaves_global_random_state():
    from ser.train.robust import draw_variant, make_robust_config, render_variant

    cfg = make_robust_config(
        {"p_pitch": 1.0, "p_tempo": 1.0, "noises": ["generated-pink"], "degrade": {"p_reverb": 0, "p_channel": 0}}
    )
    v = draw_variant("ab" * 32, 0, cfg)
    random.seed(5)
    before = random.getstate()
    a = render_variant(tone(0.5), SR, v)
    assert random.getstate() == before
    np.testing.assert_array_equal(a, render_variant(tone(0.5), SR, v))
    assert a.dtype == np.float32 and np.all(np.isfinite(a))


# ---- formant shift (VTLP) ----------------------------------------------------------------------------------------


def _resonant(excitation: np.ndarray, formants=((700.0, 100.0), (1800.0, 150.0))) -> np.ndarray:
    """``excitation`` through second-order resonators at ``(centre Hz, bandwidth Hz)``: a synthetic vowel."""
    import scipy.signal as ss

    x = np.asarray(excitation, dtype=np.float64)
    out = np.zeros_like(x)
    for fc, bw in formants:
        r, th = np.exp(-np.pi * bw / SR), 2 * np.pi * fc / SR
        out += ss.lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], x)
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def _peak_hz(y: np.ndarray, lo: float, hi: float) -> float:
    """Frequency of the largest Welch power between ``lo`` and ``hi`` Hz (15.6 Hz bins)."""
    import scipy.signal as ss

    f, p = ss.welch(y, SR, nperseg=1024)
    band = (f >= lo) & (f <= hi)
    return float(f[band][np.argmax(p[band])])


def _centroid_hz(y: np.ndarray, lo: float, hi: float) -> float:
    """Power-weighted mean frequency between ``lo`` and ``hi`` Hz."""
    import scipy.signal as ss

    f, p = ss.welch(y, SR, nperseg=1024)
    band = (f >= lo) & (f <= hi)
    return float(np.sum(f[band] * p[band]) / np.sum(p[band]))


@pytest.mark.parametrize("alpha", [0.9, 1.1, 1.2])
def test_formant_shift_moves_formant_peaks_by_the_warp_factor(alpha):
    from ser.augment import formant_shift

    y = _resonant(np.random.default_rng(0).standard_normal(2 * SR))
    out = formant_shift(y, SR, alpha)
    for fc, lo, hi in ((700.0, 450.0, 1150.0), (1800.0, 1300.0, 2600.0)):
        before, after = _peak_hz(y, lo, hi), _peak_hz(out, lo, hi)
        assert abs(before - fc) < 40
        assert after / before == pytest.approx(alpha, rel=0.04), (fc, before, after)


def test_formant_shift_keeps_pitch_length_and_level():
    from ser.augment import formant_shift

    pulses = np.zeros(2 * SR)
    pulses[:: SR // 125] = 1.0  # a 125 Hz glottal pulse train
    y = _resonant(pulses)
    out = formant_shift(y, SR, 1.15)
    assert out.shape == y.shape and out.dtype == np.float32
    assert np.sqrt(np.mean(out.astype(np.float64) ** 2)) == pytest.approx(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
    f0 = frames.f0(out, SR)[0]
    assert np.nanmedian(f0) == pytest.approx(125.0, rel=0.02)  # the harmonics stayed: pitch unchanged
    # while the formant moved: the harmonics near it (125 Hz apart) re-weighted, their power centroid up by ~alpha
    assert _centroid_hz(out, 300, 1300) / _centroid_hz(y, 300, 1300) > 1.05


def test_formant_shift_identity_determinism_and_bad_input():
    from ser.augment import formant_shift, vtlp_warp

    y = _resonant(np.random.default_rng(1).standard_normal(SR))
    np.testing.assert_array_equal(formant_shift(y, SR, 1.0), y)
    near = formant_shift(y, SR, 1.0001)  # the STFT path itself is transparent
    assert np.corrcoef(near, y)[0, 1] > 0.999
    np.testing.assert_array_equal(formant_shift(y, SR, 0.93), formant_shift(y, SR, 0.93))
    assert np.all(formant_shift(np.zeros(SR, dtype=np.float32), SR, 1.1) == 0)  # digital silence stays silent
    f = np.linspace(0, SR / 2, 257)
    for alpha in (0.9, 1.0, 1.1):
        w = vtlp_warp(f, alpha, SR)
        assert w[0] == 0 and w[-1] == pytest.approx(SR / 2) and np.all(np.diff(w) > 0)
        low = f < 4000 * min(alpha, 1)
        np.testing.assert_allclose(w[low], alpha * f[low])
    with pytest.raises(ConfigError, match="positive"):
        vtlp_warp(f, 0.0, SR)
    with pytest.raises(ConfigError, match="non-finite"):
        formant_shift(np.array([0.0, np.nan], dtype=np.float32), SR, 1.1)
    with pytest.raises(ConfigError, match="mono"):
        formant_shift(np.zeros((2, 100), dtype=np.float32), SR, 1.1)
