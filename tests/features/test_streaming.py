"""WindowSpectrogram: the STFT magnitude of a stream's overlapping windows, each inner frame computed once, equal to
the offline spectrogram of every window (on real speech), and what it saves."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ser.features.frames import spectrogram
from ser.features.streaming import WindowSpectrogram


@pytest.fixture(scope="module")
def speech(ravdess_dir) -> np.ndarray:
    clips = sorted((ravdess_dir / "Actor_02").glob("*.flac"))[:3]
    return np.concatenate([sf.read(c, dtype="float32")[0] for c in clips])


def windows(n: int, window: int, hop: int):
    """(start, end) of a stream's partial windows: the last ``window`` samples at every ``hop``."""
    return [(max(0, end - window), end) for end in range(hop, n + 1, hop)]


@pytest.mark.shared_data
@pytest.mark.parametrize(("window", "hop"), [(32000, 8000), (24000, 4800), (8000, 8000)])
def test_every_window_equals_the_offline_spectrogram_and_most_frames_are_reused(speech, window, hop):
    ws = WindowSpectrogram()
    wins = windows(speech.size, window, hop)
    total = 0
    for a, b in wins:
        got = ws.magnitude(speech[a:b], a)
        want = spectrogram(speech[a:b])
        assert got.dtype == np.float32 and got.shape == want.shape
        assert (
            got.flags.f_contiguous == want.flags.f_contiguous
        )  # librosa's layout: the mel product is 2-5x slower in C order
        assert np.array_equal(got, want), (a, b, float(np.abs(got - want).max()))
        total += want.shape[1]
    assert len(wins) > 10
    if window > hop:  # overlapping windows: each inner frame computed once, edges every time
        overlap = 1 - hop / window
        assert ws.computed < (1 - overlap + 0.1) * total, (ws.computed, total)
    else:  # no overlap: nothing to reuse, nothing computed twice either
        assert ws.computed == total


@pytest.mark.shared_data
def test_windows_off_the_hop_grid_or_jumping_are_still_exact(speech):
    ws = WindowSpectrogram()
    rng = np.random.default_rng(0)
    a = 0
    for _ in range(12):
        a += int(rng.integers(0, 9000))  # any start: off the 160-sample grid, or past the kept frames
        b = min(speech.size, a + int(rng.integers(500, 30000)))
        if b - a < 400:
            break
        assert np.array_equal(ws.magnitude(speech[a:b], a), spectrogram(speech[a:b]))
    # a window that goes back in time (a new stream position) is computed whole, still exact
    assert np.array_equal(ws.magnitude(speech[1600:33600], 1600), spectrogram(speech[1600:33600]))


def test_short_and_silent_windows():
    ws = WindowSpectrogram()
    for n in (400, 511, 512, 513, 1000):
        y = np.zeros(n, dtype=np.float32)
        y[::7] = 0.1
        assert np.array_equal(ws.magnitude(y, 0), spectrogram(y))
