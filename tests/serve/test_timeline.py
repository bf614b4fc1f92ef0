"""Emotion timeline: segmentation on synthetic signals, grid and smoothing, summary, plot, and the CLI
(``ser predict``, ``ser timeline``) on an exported (untrained) model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ser import timeline as T
from ser.errors import ConfigError
from tests.conftest import RAVDESS8, export_tiny_model, write_wav

SR = 16_000
LABELS = RAVDESS8


def voice(seconds: float, f0: float = 140.0, amp: float = 0.3) -> np.ndarray:
    """A speech-like burst webrtcvad accepts: 19 harmonics of a vibrato f0, amplitude-modulated at 4 Hz."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))) / SR
    y = sum(amp / k * np.sin(k * phase) for k in range(1, 20))
    return (y * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


def hiss(seconds: float, rms: float = 1e-3) -> np.ndarray:
    return (rms * np.random.default_rng(0).standard_normal(int(seconds * SR))).astype(np.float32)


def fake_proba(clip: np.ndarray) -> np.ndarray:
    """'angry' for high-pitched clips, 'neutral' for low ones (zero-crossing rate as a pitch proxy)."""
    zcr = np.mean(np.abs(np.diff(np.sign(clip)))) / 2
    p = np.full(len(LABELS), 0.02)
    p[LABELS.index("angry" if zcr * SR / 2 > 200 else "neutral")] = 1.0
    return p / p.sum()


# ------------------------------------------------------------------------------------------------ pure segmentation


def test_flags_to_segments():
    flags = np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 1], dtype=bool)
    np.testing.assert_allclose(T.flags_to_segments(flags, 0.03), [[0.03, 0.09], [0.15, 0.18], [0.21, 0.30]])
    assert T.flags_to_segments(np.zeros(5, bool), 0.03).shape == (0, 2)
    np.testing.assert_allclose(T.flags_to_segments(np.ones(3, bool), 0.01), [[0.0, 0.03]])


def test_merge_gaps_drop_short_split_long():
    segs = np.array([[0.0, 1.0], [1.2, 2.0], [2.5, 2.6], [3.0, 3.1]])
    merged = T.merge_gaps(segs, 0.3)
    np.testing.assert_allclose(merged, [[0.0, 2.0], [2.5, 2.6], [3.0, 3.1]])  # 0.2 s pause joined, 0.4 s kept
    np.testing.assert_allclose(T.drop_short(merged, 0.25), [[0.0, 2.0]])
    split = T.split_long(np.array([[1.0, 10.0], [12.0, 16.0]]), 4.0)
    np.testing.assert_allclose(split, [[1, 4], [4, 7], [7, 10], [12, 16]])  # 9 s → 3 × 3 s; exactly 4 s stays whole
    assert T.split_long(np.zeros((0, 2)), 4.0).shape == (0, 2)
    assert T.merge_gaps(np.zeros((0, 2)), 0.3).shape == (0, 2)


def test_vad_finds_bursts_and_ignores_silence_and_hiss():
    y = np.concatenate([silence(1.0), voice(1.0), silence(0.5), voice(0.5, f0=220), hiss(1.0)])
    segs = T.segment(y, SR, T.VadConfig(aggressiveness=2))
    assert segs.shape == (2, 2)
    np.testing.assert_allclose(segs, [[1.0, 2.0], [2.5, 3.0]], atol=0.15)
    assert T.segment(silence(2.0), SR).shape == (0, 2)
    assert T.segment(hiss(2.0), SR).shape == (0, 2)  # webrtcvad alone flags low hiss; the energy gate drops it


def test_vad_merges_short_pause_and_drops_blips():
    y = np.concatenate([silence(0.5), voice(0.6), silence(0.15), voice(0.6), silence(1.0), voice(0.12), silence(0.5)])
    segs = T.segment(y, SR)
    assert segs.shape == (1, 2)  # the 0.15 s pause is bridged, the 0.12 s blip is dropped
    np.testing.assert_allclose(segs[0], [0.5, 1.85], atol=0.15)


def test_vad_splits_long_speech_into_windows():
    segs = T.segment(np.concatenate([silence(0.3), voice(10.0), silence(0.3)]), SR, T.VadConfig(max_segment_s=4.0))
    assert len(segs) == 3
    lengths = segs[:, 1] - segs[:, 0]
    assert np.all(lengths <= 4.0 + 1e-9) and np.allclose(lengths, lengths[0])
    assert lengths.sum() == pytest.approx(10.0, abs=0.2)


def test_vad_other_rate_and_bad_audio():
    y = np.concatenate([silence(0.5), voice(1.0), silence(0.5)])
    import soxr

    segs = T.segment(soxr.resample(y, SR, 22050).astype(np.float32), 22050)  # resampled for webrtcvad internally
    np.testing.assert_allclose(segs, [[0.5, 1.5]], atol=0.15)
    with pytest.raises(Exception, match="non-finite"):
        T.vad_flags(np.full(1600, np.nan, np.float32), SR)
    with pytest.raises(ConfigError):
        T.VadConfig(aggressiveness=5)
    with pytest.raises(ConfigError):
        T.VadConfig(frame_ms=25)


# ------------------------------------------------------------------------------------------------ grid, smoothing


def test_grid_probabilities_overlap_weighted():
    segs = np.array([[0.0, 1.0], [1.25, 2.0]])
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    times, P = T.grid_probabilities(segs, probs, 3.0, 0.5, 2)
    np.testing.assert_allclose(times, [0.25, 0.75, 1.25, 1.75, 2.25, 2.75])
    np.testing.assert_allclose(P[:2], [[1, 0], [1, 0]])
    np.testing.assert_allclose(P[2:4], [[0, 1], [0, 1]])  # bin [1.0, 1.5) only overlaps the second segment
    assert np.isnan(P[4:]).all()
    voiced = ~np.isnan(P).any(axis=1)
    np.testing.assert_allclose(P[voiced].sum(axis=1), 1.0)
    _, P2 = T.grid_probabilities(np.array([[0.0, 0.75], [0.75, 1.0]]), probs, 1.0, 1.0, 2)
    np.testing.assert_allclose(P2, [[0.75, 0.25]])
    _, P3 = T.grid_probabilities(np.array([[0.0, 1.1]]), probs[:1], 1.5, 0.5, 2)
    assert np.isnan(P3[2]).all()  # 0.1 s of voice in a 0.5 s bin is below the default 25 % coverage
    _, P4 = T.grid_probabilities(np.array([[0.0, 1.1]]), probs[:1], 1.5, 0.5, 2, min_coverage=0.0)
    np.testing.assert_allclose(P4[2], [1, 0])


def test_ema_smoothing():
    P = np.array([[1, 0], [1, 0], [0, 1], [np.nan, np.nan], [0, 1], [0, 1]], dtype=float)
    S = T.ema_smooth(P, 0.5)
    np.testing.assert_allclose(S[:3, 0], [1.0, 1.0, 0.5])
    assert np.isnan(S[3]).all()
    np.testing.assert_allclose(S[4:, 0], [0.25, 0.125])  # state carries across the unvoiced bin
    np.testing.assert_allclose(S[~np.isnan(S).any(axis=1)].sum(axis=1), 1.0)
    np.testing.assert_allclose(T.ema_smooth(P, 1.0), P, equal_nan=True)
    np.testing.assert_allclose(T.smooth(P, "none", 0.5), P, equal_nan=True)


def test_median_smoothing_removes_a_spike():
    P = np.array([[0.9, 0.1]] * 3 + [[0.1, 0.9]] + [[0.9, 0.1]] * 3)
    S = T.median_smooth(P, 3)
    np.testing.assert_allclose(S, np.array([[0.9, 0.1]] * 7))
    np.testing.assert_allclose(T.smooth(P, "median", 0.5, points=3), S)
    with pytest.raises(ConfigError):
        T.TimelineConfig(smoothing="mean")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        T.TimelineConfig(step_s=0)


def test_find_peaks():
    times = (np.arange(10) + 0.5) * 0.5
    p = np.array([0.1, 0.6, 0.8, 0.7, 0.2, np.nan, 0.9, 0.95, 0.3, 0.1])
    peaks = T.find_peaks(times, p, 0.5, 0.5)
    assert [(pk.start_s, pk.end_s) for pk in peaks] == [(0.5, 2.0), (3.0, 4.0)]
    assert peaks[0].max_p == pytest.approx(0.8) and peaks[0].t_max_s == pytest.approx(1.25)
    assert peaks[1].max_p == pytest.approx(0.95) and peaks[1].t_max_s == pytest.approx(3.75)
    assert T.find_peaks(times, np.zeros(10), 0.5, 0.5) == []


def test_summary_shares_sum_to_one():
    segs = np.array([[0.0, 1.0], [2.0, 5.0]])
    probs = np.array([[0.1, 0.9], [0.8, 0.2]])
    times, P = T.grid_probabilities(segs, probs, 6.0, 0.5, 2)
    s = T.summarize(segs, probs, ["angry", "sad"], 6.0, times, P, step_s=0.5, peak_label="angry")
    assert s.shares == pytest.approx({"angry": 0.75, "sad": 0.25})
    assert sum(s.shares.values()) == pytest.approx(1.0)
    assert s.dominant == "angry" and s.voiced_s == pytest.approx(4.0) and s.voiced_fraction == pytest.approx(4 / 6)
    assert s.mean_probabilities["angry"] == pytest.approx((0.1 + 3 * 0.8) / 4)
    assert [(pk.start_s, pk.end_s) for pk in s.peaks] == [(2.0, 5.0)]
    empty = T.summarize(
        np.zeros((0, 2)), np.zeros((0, 2)), ["angry", "sad"], 3.0, times[:6], P[:6] * np.nan, step_s=0.5
    )
    assert empty.dominant is None and sum(empty.shares.values()) == 0 and empty.peaks == []


# ------------------------------------------------------------------------------------------------ whole analysis


def test_analyze_with_fake_model(tmp_path):
    y = np.concatenate([silence(0.5), voice(2.0, f0=110), silence(1.0), voice(3.0, f0=300), silence(0.5)])
    tl = T.analyze(y, SR, fake_proba, LABELS, T.TimelineConfig(step_s=0.5, smoothing="ema", tau_s=0.5))
    assert tl.duration_s == pytest.approx(7.0)
    assert [LABELS[int(np.argmax(p))] for p in tl.probs] == ["neutral", "angry"]
    s = tl.summary
    assert sum(s.shares.values()) == pytest.approx(1.0)
    assert s.shares["angry"] == pytest.approx(3 / 5, abs=0.06) and s.dominant == "angry"
    assert len(s.peaks) == 1 and s.peaks[0].start_s >= 3.0 and s.peaks[0].end_s <= 7.0
    d = tl.to_dict()
    json.dumps(d, allow_nan=False)  # JSON-ready: NaN became null
    grid = d["timeline"]
    assert len(grid["times_s"]) == len(grid["voiced"]) == len(grid["probabilities"]["angry"]) == 14
    assert grid["voiced"][0] is False and grid["probabilities"]["angry"][0] is None and grid["label"][0] is None
    for k, ok in enumerate(grid["voiced"]):
        if ok:
            assert sum(grid["probabilities"][lab][k] for lab in LABELS) == pytest.approx(1.0)
    out = T.plot_timeline(tl, tmp_path / "sub" / "t.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_analyze_silence_gives_an_empty_timeline(tmp_path):
    tl = T.analyze(silence(2.0), SR, fake_proba, LABELS)
    assert len(tl.segments) == 0 and tl.summary.dominant is None and tl.summary.voiced_s == 0
    assert tl.to_dict()["timeline"]["voiced"] == [False] * 4
    assert T.plot_timeline(tl, tmp_path / "empty.png").is_file()


def test_segments_the_model_rejects_are_left_out():
    def picky(clip: np.ndarray) -> np.ndarray:
        from ser.errors import AudioError

        if clip.size < SR:
            raise AudioError("too short")
        return fake_proba(clip)

    y = np.concatenate([silence(0.5), voice(0.5), silence(1.0), voice(1.5), silence(0.5)])
    tl = T.analyze(y, SR, picky, LABELS)
    assert len(tl.segments) == 1 and tl.segments[0, 0] > 1.5


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("model") / "m", "7", labels=LABELS)


def test_cli_predict_json_and_bad_file(run_cli, model_dir, tmp_path):
    good = write_wav(tmp_path / "a.wav", voice(1.5))
    bad = tmp_path / "b.wav"
    bad.write_text("not audio at all\n" * 20)
    code, out, _ = run_cli("predict", good, bad, tmp_path / "missing.wav", "--model", model_dir, "--json")
    assert code == 1
    rows = json.loads(out)
    assert [r["ok"] for r in rows] == [True, False, False]
    assert sum(rows[0]["probabilities"].values()) == pytest.approx(1.0) and rows[0]["model_version"] == "7"
    assert "undecodable" in rows[1]["error"] and "not found" in rows[2]["error"]
    code, out, _ = run_cli("predict", good, "--model", model_dir)
    assert code == 0 and "a.wav" in out
    code, _, err = run_cli("predict", good, "--model", model_dir, "--workdir", tmp_path)
    assert code == 2 and "not both" in err
    code, _, err = run_cli("predict", good, "--workdir", tmp_path / "empty")
    assert code == 2 and "error:" in err


def test_cli_timeline_json_and_plot(run_cli, model_dir, tmp_path):
    rec = write_wav(tmp_path / "rec.wav", np.concatenate([silence(0.5), voice(2.0), silence(0.7), voice(1.0, 250)]))
    png = tmp_path / "t.png"
    code, out, _ = run_cli("timeline", rec, "--model", model_dir, "--plot", png, "--json", "--smoothing", "median")
    assert code == 0
    d = json.loads(out)
    assert len(d["segments"]) == 2 and d["model_version"] == "7"
    assert sum(d["summary"]["shares"].values()) == pytest.approx(1.0)
    assert png.read_bytes()[:4] == b"\x89PNG"
    code, out, _ = run_cli("timeline", rec, "--model", model_dir)
    assert code == 0 and "dominant" in out
    code, _, err = run_cli("timeline", rec, "--model", model_dir, "--smoothing", "mean")
    assert code == 2 and "smoothing" in err
