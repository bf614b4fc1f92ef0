"""Voice activity: which 10/20/30 ms frames of a clip hold speech (webrtcvad plus an energy gate).

Shared by the service (no-speech answers, stream endpointing, timelines) and by offline code (input statistics of
the prediction log and of the training reference). Pure functions of arrays: ``audio`` mono float32
``(n_samples,)`` at ``sr`` Hz, nominally in [-1, 1]; flags bool ``(n_frames,)``; levels in dBFS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ser import TARGET_SR
from ser.errors import AudioError, Cancelled, ConfigError

VAD_RATES = (8000, 16000, 32000, 48000)
"""Sample rates webrtcvad accepts."""
VAD_CHUNK_SAMPLES = 1 << 20
"""Samples :func:`vad_flags` converts at a time (so a long recording never has a float64 copy made whole)."""


@dataclass(frozen=True)
class VadConfig:
    """Voice-activity segmentation parameters (seconds unless named otherwise)."""

    aggressiveness: int = 2
    """webrtcvad mode 0 (keeps most) … 3 (drops most non-speech)."""
    frame_ms: int = 30
    min_level_db: float | None = -50.0
    """Frames with RMS below this (dBFS, full-scale sine = -3 dB) are unvoiced; None turns the gate off."""
    merge_gap_s: float = 0.3
    min_segment_s: float = 0.25
    max_segment_s: float = 4.0

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ConfigError(f"VAD aggressiveness must be 0..3, got {self.aggressiveness}")
        if self.frame_ms not in (10, 20, 30):
            raise ConfigError(f"VAD frame must be 10, 20 or 30 ms, got {self.frame_ms}")
        if self.merge_gap_s < 0 or self.min_segment_s < 0 or self.max_segment_s <= 0:
            raise ConfigError("VAD durations must be >= 0 (max_segment_s > 0)")


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float ``(n,)`` in [-1, 1] → int16 ``(n,)`` (clipped, rounded)."""
    return np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32767.0), -32768, 32767).astype(np.int16)


def frame_levels_db(audio: np.ndarray, frame_len: int) -> np.ndarray:
    """RMS level (dBFS, floor -120) of consecutive non-overlapping frames: ``(n,)`` → ``(n // frame_len,)``."""
    n = audio.size // frame_len
    frames = np.asarray(audio[: n * frame_len], dtype=np.float64).reshape(n, frame_len)
    rms = np.sqrt(np.mean(frames**2, axis=1)) if n else np.zeros(0)
    return 20.0 * np.log10(np.maximum(rms, 1e-6))


def vad_flags(
    audio: np.ndarray, sr: int, cfg: VadConfig | None = None, should_stop: Callable[[], bool] | None = None
) -> np.ndarray:
    """Voice flag of each ``cfg.frame_ms`` frame: bool ``(n_samples // frame_len,)``.

    Audio at a rate webrtcvad does not take is resampled to 16 kHz first (frame times are unchanged). Runs in
    chunks of :data:`VAD_CHUNK_SAMPLES`; ``should_stop()`` true before a chunk raises :class:`~ser.errors.Cancelled`.
    """
    import webrtcvad

    cfg = cfg or VadConfig()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise AudioError(f"audio must be mono (n_samples,), got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise AudioError("non-finite samples (NaN or Inf)")
    if sr not in VAD_RATES:
        from ser.audio import resample

        audio, sr = resample(audio, sr, TARGET_SR), TARGET_SR
    frame_len = sr * cfg.frame_ms // 1000
    n = audio.size // frame_len
    vad = webrtcvad.Vad(cfg.aggressiveness)
    flags = np.zeros(n, dtype=bool)
    step = max(1, VAD_CHUNK_SAMPLES // frame_len)  # frames per chunk: the float64 / int16 copies stay small
    for c0 in range(0, n, step):
        check_stop(should_stop)
        c1 = min(n, c0 + step)
        chunk = audio[c0 * frame_len : c1 * frame_len]
        pcm = to_pcm16(chunk)
        flags[c0:c1] = [vad.is_speech(pcm[i * frame_len : (i + 1) * frame_len].tobytes(), sr) for i in range(c1 - c0)]
        if cfg.min_level_db is not None:
            flags[c0:c1] &= frame_levels_db(chunk, frame_len) >= cfg.min_level_db
    return flags


def check_stop(should_stop: Callable[[], bool] | None) -> None:
    """Raise :class:`~ser.errors.Cancelled` when ``should_stop()`` says the work is no longer wanted."""
    if should_stop is not None and should_stop():
        raise Cancelled("analysis stopped: the request was cancelled")
