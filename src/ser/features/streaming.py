"""The STFT magnitude of successive windows of one stream, each frame computed once.

A stream's partial answers look at overlapping windows (by default the last 2 s, every 0.5 s): computed from
scratch, three quarters of every window's STFT was already computed for the window before. :class:`WindowSpectrogram`
keeps the columns that do not depend on where a window starts or ends and computes only the rest, so each
window's magnitude equals :func:`ser.features.frames.spectrogram` of that window's samples, column for column (the
same float32 → float64 → complex64 steps as librosa's STFT; a test checks equality on real speech).

Written here rather than taken from a library: librosa's STFT has no streaming form, and its frames near a window's
edges see the window's zero padding, so a generic streaming STFT (which sees the neighbouring audio) would not give
the model the input it was trained on.

Frames are centred: frame ``t`` of a window starting at stream sample ``start`` is centred on sample
``start + t * hop_length`` and spans ``n_fft`` samples around it. A frame whose span lies inside the window is an
*inner* frame; it depends only on the stream's samples, so when ``start`` is a multiple of ``hop_length`` it is
stored by its stream frame index ``(start // hop_length) + t`` and reused by later windows. Frames reaching past
either edge are computed each time with the zero padding of the offline path.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from librosa.filters import get_window
from librosa.util import pad_center


class WindowSpectrogram:
    """STFT magnitudes ``(1 + n_fft // 2, T)`` (float32, linear amplitude) of successive windows of one stream.

    Call :meth:`magnitude` with each window's samples and its start (stream sample index). Kept: the inner frames
    of the latest window, one contiguous run of stream frames, so memory is bounded by the window length whatever
    the stream's length. Windows that move forward by whole hops reuse them; any other window is computed whole
    (still exact).
    """

    def __init__(self, *, n_fft: int = 512, win_length: int = 400, hop_length: int = 160, window: str = "hann"):
        self.n_fft, self.hop = int(n_fft), int(hop_length)
        # as librosa.stft builds it: the (periodic) window, zero-padded to n_fft, float64
        self._window = pad_center(get_window(window, int(win_length), fftbins=True), size=self.n_fft)
        self._kept = np.zeros((1 + self.n_fft // 2, 0), dtype=np.float32)  # stream frames [_g, _g + kept)
        self._g = 0
        self.computed = 0  # frames computed so far (the rest were reused): what the cache saves shows here

    def _frames(self, padded: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Magnitudes ``(n_bins, len(t))`` of frames ``t`` of a signal zero-padded by ``n_fft // 2`` each side."""
        seg = padded[t[:, None] * self.hop + np.arange(self.n_fft)]  # (k, n_fft) float32
        spec = scipy.fft.rfft(self._window * seg, axis=-1).astype(np.complex64)  # librosa: float64 FFT → complex64
        self.computed += t.size
        return np.abs(spec).T

    def magnitude(self, y: np.ndarray, start: int) -> np.ndarray:
        """``spectrogram(y)`` for the window ``y`` (float32 ``(n,)``) that begins at stream sample ``start``."""
        y = np.ascontiguousarray(y, dtype=np.float32)
        half = self.n_fft // 2
        T = 1 + y.size // self.hop
        padded = np.pad(y, (half, half))
        # inner frames: t in [lo, hi), whose n_fft span lies inside the window (no zero padding reaches them)
        lo = -(-half // self.hop)
        hi = max(lo, min(T, (y.size - half) // self.hop + 1))
        if start % self.hop or hi == lo:
            return self._frames(padded, np.arange(T))
        g0 = start // self.hop
        a, b = g0 + lo, g0 + hi  # the inner frames as stream frames
        have_lo, have_hi = max(a, self._g), min(b, self._g + self._kept.shape[1])
        inner = np.empty((self._kept.shape[0], hi - lo), dtype=np.float32)
        if have_lo < have_hi and have_lo == a:  # a kept run covers the window's first inner frames: reuse it
            inner[:, : have_hi - a] = self._kept[:, have_lo - self._g : have_hi - self._g]
            done = have_hi - a
        else:
            done = 0
        if done < hi - lo:
            inner[:, done:] = self._frames(padded, np.arange(lo + done, hi))
        self._kept, self._g = inner, a
        edges = np.r_[np.arange(lo), np.arange(hi, T)]
        out = np.empty((self._kept.shape[0], T), dtype=np.float32, order="F")  # the layout librosa gives
        out[:, lo:hi] = inner
        if edges.size:
            out[:, edges] = self._frames(padded, edges)
        return out
