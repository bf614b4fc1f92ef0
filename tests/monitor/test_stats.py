"""Input statistics on signals whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from ser.monitor.stats import high_band_share, input_stats, seen_logmel, snr_estimate

SR = 16_000


def sine(freq: float = 440.0, amp: float = 1.0, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_full_scale_sine_levels():
    s = input_stats(sine(amp=1.0))
    assert s.peak_dbfs == pytest.approx(0.0, abs=0.01)
    assert s.rms_dbfs == pytest.approx(-3.01, abs=0.02)
    assert s.clipped_fraction == pytest.approx(np.mean(np.abs(sine()) >= 0.999), abs=1e-9)
    assert s.clipped_fraction < 0.03  # a sine only touches full scale near its crests


def test_clipping_fraction_of_an_overdriven_sine():
    y = np.clip(4.0 * sine(amp=1.0), -1.0, 1.0)  # |4 sin| >= 1 for all but asin(1/4)/(pi/2) = 16.1 % of the time
    s = input_stats(y)
    assert s.clipped_fraction == pytest.approx(1 - 2 / np.pi * np.arcsin(1 / 4), abs=0.01)
    assert s.peak_dbfs == pytest.approx(0.0, abs=1e-6)


def test_silence_has_no_speech_and_floor_levels():
    s = input_stats(np.zeros(SR * 2, dtype=np.float32))
    assert s.speech_fraction == 0.0
    assert s.rms_dbfs == -120.0 and s.peak_dbfs == -120.0 and s.clipped_fraction == 0.0
    assert s.high_band_share == 0.0
    assert np.all(np.isfinite(s.mel_mean)) and s.mel_mean.shape == (64,)


def test_high_band_share_separates_wide_and_narrow_band():
    assert high_band_share(sine(6000.0), SR) == pytest.approx(1.0, abs=1e-3)
    assert high_band_share(sine(1000.0), SR) < 1e-4
    white = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    assert high_band_share(white, SR) == pytest.approx(4000 / 7950, abs=0.02)  # flat spectrum: 4-8 kHz of 50 Hz-8 kHz
    assert high_band_share(white, 8000) == 0.0  # nothing above 4 kHz at an 8 kHz rate


def test_snr_estimate_tracks_the_mixed_noise():
    rng = np.random.default_rng(0)
    burst = np.concatenate([np.zeros(SR // 2), sine(300.0, 0.3, 1.0), np.zeros(SR // 2)]).astype(np.float32)
    noise = rng.standard_normal(burst.size).astype(np.float32)
    est = []
    for snr in (30, 20, 10, 0):
        scale = np.sqrt(np.mean(burst**2) / 10 ** (snr / 10)) / np.sqrt(np.mean(noise**2))
        est.append(snr_estimate(burst + scale * noise, 480))
    assert est == sorted(est, reverse=True)  # more noise, lower estimate
    for snr, e in zip((30, 20, 10, 0), est, strict=True):
        assert abs(e - (snr + 3)) < 3  # the loudest half holds twice the clip's average power: ~ +3 dB
    assert snr_estimate(0.5 * burst, 480) == pytest.approx(snr_estimate(burst, 480), abs=0.1)  # level-invariant


def test_mel_statistics_come_from_the_given_logmel_and_file_facts_are_kept():
    lm = np.vstack([np.full(10, -50.0), np.arange(10.0)]).astype(np.float32)
    s = input_stats(sine(), logmel=lm, native_sr=48000, channels=2, container="FLAC", codec="PCM_24")
    assert s.mel_mean.tolist() == pytest.approx([-50.0, 4.5])
    assert s.mel_std.tolist() == pytest.approx([0.0, np.std(np.arange(10.0))])
    d = s.to_dict()
    assert (d["native_sr"], d["channels"], d["container"], d["codec"]) == (48000, 2, "FLAC", "PCM_24")
    assert isinstance(d["mel_mean"], list) and isinstance(d["mel_mean"][0], float)


def test_seen_logmel_takes_the_logmel_rows_of_a_stacked_input():
    x = np.arange(100.0).reshape(10, 10)
    assert seen_logmel(x, "logmel+mfcc", 4).shape == (4, 10)
    assert seen_logmel(x, "mfcc", 4) is None


def test_bad_audio_is_refused():
    from ser.errors import AudioError

    with pytest.raises(AudioError):
        input_stats(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(AudioError):
        input_stats(np.array([0.0, np.nan] * 500, dtype=np.float32))
