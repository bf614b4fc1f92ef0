"""Streaming building blocks, pure of any transport: :class:`SampleBuffer` (samples by absolute stream index),
:class:`FrameVad` (webrtcvad + energy gate frame by frame), :class:`Endpointer` (utterances from VAD flags) and a
chunk-by-chunk resampler."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ser.vad import VAD_RATES, VadConfig, frame_levels_db, to_pcm16


class SampleBuffer:
    """Growable ring of float32 samples addressed by absolute stream index: :meth:`append` at the end,
    :meth:`slice` ``[a, b)``, :meth:`drop_before` to forget old samples (amortised O(1) per sample)."""

    def __init__(self, capacity: int = 1 << 16):
        self._data = np.zeros(max(16, capacity), dtype=np.float32)
        self._lo = 0  # index into _data of the first kept sample
        self._hi = 0  # one past the last
        self.start = 0  # absolute index of the first kept sample

    @property
    def end(self) -> int:
        """Absolute index one past the newest sample (= samples appended so far)."""
        return self.start + self._hi - self._lo

    def __len__(self) -> int:
        return self._hi - self._lo

    def append(self, x: np.ndarray) -> None:
        n = int(x.size)
        if self._hi + n > self._data.size:
            live = self._data[self._lo : self._hi]
            if live.size + n > self._data.size // 2:
                new = np.zeros(2 * (live.size + n), dtype=np.float32)
                new[: live.size] = live
                self._data = new
            else:
                self._data[: live.size] = live.copy()
            self._lo, self._hi = 0, live.size
        self._data[self._hi : self._hi + n] = x
        self._hi += n

    def slice(self, a: int, b: int) -> np.ndarray:
        """Copy of samples with absolute indices ``[a, b)``, clipped to what is kept."""
        a, b = max(a, self.start), min(b, self.end)
        if b <= a:
            return np.zeros(0, dtype=np.float32)
        return self._data[self._lo + a - self.start : self._lo + b - self.start].copy()

    def drop_before(self, index: int) -> None:
        """Forget samples with absolute index < ``index``."""
        k = min(max(0, index - self.start), len(self))
        self._lo += k
        self.start += k


class Endpointer:
    """Utterance boundaries from a stream of VAD frame flags (frame ``i`` covers ``[i, i + 1)`` frame units).

    An utterance opens at a voiced frame and closes once ``end_silence`` consecutive unvoiced frames follow its last
    voiced frame, or when it reaches ``max_frames``; one shorter than ``min_frames`` (first to last voiced frame) is
    dropped. :meth:`push` and :meth:`flush` return a closed utterance ``(start_frame, end_frame)`` (end exclusive,
    ending at the last voiced frame) or None.
    """

    def __init__(self, end_silence: int, min_frames: int, max_frames: int):
        self.end_silence, self.min_frames, self.max_frames = max(1, end_silence), max(1, min_frames), max_frames
        self.n = 0  # frames pushed
        self.start: int | None = None  # first voiced frame of the open utterance
        self.last_end = 0  # one past its last voiced frame

    def push(self, voiced: bool) -> tuple[int, int] | None:
        i = self.n
        self.n += 1
        if voiced:
            if self.start is None:
                self.start = i
            self.last_end = i + 1
            if self.last_end - self.start >= self.max_frames:
                return self._close()
            return None
        if self.start is not None and self.n - self.last_end >= self.end_silence:
            return self._close()
        return None

    def flush(self) -> tuple[int, int] | None:
        """Close the open utterance (end of stream)."""
        return self._close() if self.start is not None else None

    def _close(self) -> tuple[int, int] | None:
        assert self.start is not None
        seg = (self.start, self.last_end)
        self.start = None
        return seg if seg[1] - seg[0] >= self.min_frames else None


class FrameVad:
    """Streaming voice activity: webrtcvad (one ``Vad`` for the whole stream) AND the energy gate of
    :func:`ser.vad.vad_flags`, over consecutive ``cfg.frame_ms`` frames of ``sr`` Hz audio
    (``sr`` in :data:`VAD_RATES`). :meth:`push` takes any number of samples and returns the flags of the frames it
    completed, bool ``(n_new_frames,)``."""

    def __init__(self, sr: int, cfg: VadConfig):
        import webrtcvad

        if sr not in VAD_RATES:
            raise ValueError(f"webrtcvad takes {VAD_RATES} Hz, got {sr}")
        self.sr, self.cfg = sr, cfg
        self.frame_len = sr * cfg.frame_ms // 1000
        self._vad = webrtcvad.Vad(cfg.aggressiveness)
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        buf = np.concatenate([self._pending, x]) if self._pending.size else x
        n = buf.size // self.frame_len
        if n == 0:  # no frame completed (a 20 ms client frame against 30 ms VAD frames: one push in three)
            self._pending = buf.copy() if buf is x else buf  # never a view of the caller's array
            return np.zeros(0, dtype=bool)
        self._pending = buf[n * self.frame_len :].copy()
        frames = buf[: n * self.frame_len]
        pcm = to_pcm16(frames)
        L = self.frame_len
        flags = np.fromiter(
            (self._vad.is_speech(pcm[i * L : (i + 1) * L].tobytes(), self.sr) for i in range(n)), bool, n
        )
        if self.cfg.min_level_db is not None:
            flags &= frame_levels_db(frames, L) >= self.cfg.min_level_db
        return flags


def resampler(in_sr: int, out_sr: int) -> Callable[[np.ndarray, bool], np.ndarray]:
    """``f(chunk, last)`` resampling a stream chunk by chunk (soxr's streaming resampler keeps its filter state;
    ``last=True`` flushes the tail); the identity when the rates match."""
    if in_sr == out_sr:

        def identity(x: np.ndarray, last: bool = False) -> np.ndarray:
            return np.asarray(x, dtype=np.float32)

        return identity
    import soxr

    rs = soxr.ResampleStream(in_sr, out_sr, 1, dtype="float32", quality="HQ")

    def resample(x: np.ndarray, last: bool = False) -> np.ndarray:
        return rs.resample_chunk(np.asarray(x, dtype=np.float32), last=last)

    return resample
