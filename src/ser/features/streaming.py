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

    Call :meth:`magnitude` with each window's samples and its start (stream sample index); windows should move
    forward. Only inner frames of the latest windows are kept (at most ``max_kept`` columns), so memory stays
    bounded by the window length whatever the stream's length.
    """

    def __init__(
        self,
        *,
        n_fft: int = 512,
        win_length: int = 400,
        hop_length: int = 160,
        window: str = "hann",
        max_kept: int = 4096,
    ):
        self.n_fft, self.hop = int(n_fft), int(hop_length)
        # as librosa.stft builds it: the (periodic) window, zero-padded to n_fft, float64
        self._window = pad_center(get_window(window, int(win_length), fftbins=True), size=self.n_fft)
        self._n_bins = 1 + self.n_fft // 2
        self.max_kept = int(max_kept)
        self._cols: dict[int, np.ndarray] = {}  # stream frame index → magnitude column (n_bins,)
        self.computed = 0  # frames computed so far (the rest were reused): what the cache saves shows here

    def _frames(self, padded: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Magnitudes ``(n_bins, len(idx))`` of frames ``idx`` of a signal zero-padded by ``n_fft // 2`` each side."""
        seg = padded[idx[:, None] * self.hop + np.arange(self.n_fft)]  # (k, n_fft) float32
        spec = scipy.fft.rfft(self._window * seg, axis=-1).astype(np.complex64)  # librosa: float64 FFT → complex64
        self.computed += idx.size
        return np.abs(spec).T

    def magnitude(self, y: np.ndarray, start: int) -> np.ndarray:
        """``spectrogram(y)`` for the window ``y`` (float32 ``(n,)``) that begins at stream sample ``start``."""
        y = np.ascontiguousarray(y, dtype=np.float32)
        half = self.n_fft // 2
        T = 1 + y.size // self.hop
        padded = np.pad(y, (half, half))
        out = np.empty((self._n_bins, T), dtype=np.float32)
        t = np.arange(T)
        centre = t * self.hop
        inner = (centre >= half) & (centre + half <= y.size)
        cacheable = start % self.hop == 0
        g0 = start // self.hop
        todo = []
        for k in np.flatnonzero(inner) if cacheable else ():
            col = self._cols.get(g0 + int(k))
            if col is None:
                todo.append(int(k))
            else:
                out[:, k] = col
        missing = np.array(todo, dtype=np.int64)
        if missing.size:
            cols = self._frames(padded, missing)
            out[:, missing] = cols
            for j, k in enumerate(missing):
                self._cols[g0 + int(k)] = cols[:, j].copy()
        fresh = t[~inner] if cacheable else t
        if fresh.size:
            out[:, fresh] = self._frames(padded, fresh)
        if cacheable:
            self._forget_before(g0)
        return out

    def _forget_before(self, g: int) -> None:
        """Drop columns of frames before stream frame ``g`` (windows only move forward), and the oldest past
        ``max_kept``."""
        stale = [k for k in self._cols if k < g]
        if len(self._cols) - len(stale) > self.max_kept:
            stale = sorted(self._cols)[: len(self._cols) - self.max_kept]
        for k in stale:
            del self._cols[k]
