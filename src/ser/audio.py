"""Audio loading: anything libsndfile decodes, any rate and channel count → 16 kHz mono float32.

Pure helpers (``to_mono``, ``resample``, ``pcm_hash``) are separated from file I/O (``probe``, ``load_audio``,
``decode_bytes``). The format is detected from the file's content, not its extension, so a FLAC renamed
``.wav`` still loads, and a text file renamed ``.wav`` fails with an :class:`AudioError`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from ser import TARGET_SR
from ser.errors import AudioError

Source = str | Path | BinaryIO


@dataclass(frozen=True)
class AudioInfo:
    """Header facts about an audio file, read without decoding the samples."""

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def probe(src: Source) -> AudioInfo:
    """Read the header of ``src``. Raises :class:`AudioError` with a reason if it is not decodable audio."""
    try:
        info = sf.info(src)
    except Exception as exc:  # libsndfile raises several types; all mean "not decodable"
        raise AudioError(_reason(exc)) from exc
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(f"invalid header: {info.samplerate} Hz, {info.channels} channels")
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames), info.format, info.subtype)


def read_native(src: Source) -> tuple[np.ndarray, int]:
    """Decode ``src`` at its own rate. Returns ``(samples, sr)``, samples float32 of shape ``(frames, channels)``."""
    try:
        y, sr = sf.read(src, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(_reason(exc)) from exc
    if y.size == 0:
        raise AudioError("no audio samples (empty stream)")
    return y, int(sr)


def to_mono(y: np.ndarray) -> np.ndarray:
    """Average channels. ``y``: ``(frames,)`` or ``(frames, channels)`` → ``(frames,)`` float32."""
    if y.ndim == 1:
        return y.astype(np.float32, copy=False)
    return y.mean(axis=1, dtype=np.float32)


def resample(y: np.ndarray, orig_sr: int, target_sr: int = TARGET_SR) -> np.ndarray:
    """High-quality resampling (soxr VHQ) of a mono signal; a no-op when the rates match."""
    if orig_sr == target_sr:
        return y.astype(np.float32, copy=False)
    return soxr.resample(y, orig_sr, target_sr, quality="VHQ").astype(np.float32, copy=False)


def load_audio(src: Source, sr: int = TARGET_SR, *, allow_nonfinite: bool = False) -> np.ndarray:
    """Load ``src`` as mono float32 at ``sr`` Hz, shape ``(n_samples,)``, values nominally in [-1, 1].

    Raises :class:`AudioError` if the content is not decodable, is empty, or (unless ``allow_nonfinite``)
    holds NaN or infinite samples.
    """
    y, native_sr = read_native(src)
    mono = to_mono(y)
    if not allow_nonfinite and not np.all(np.isfinite(mono)):
        raise AudioError("non-finite samples (NaN or Inf)")
    return resample(mono, native_sr, sr)


def decode_bytes(data: bytes, sr: int = TARGET_SR) -> np.ndarray:
    """Like :func:`load_audio` for an in-memory file (an upload)."""
    if not data:
        raise AudioError("empty file (0 bytes)")
    return load_audio(io.BytesIO(data), sr)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of the file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def pcm_hash(y: np.ndarray) -> str:
    """Content hash of decoded audio: SHA-256 of the signal quantised to 16-bit PCM.

    Two files holding the same samples (a WAV and its FLAC copy, say) get the same hash.
    ``y`` is mono or ``(frames, channels)``; NaN is mapped to 0 so the hash is always defined.
    """
    q = np.round(np.nan_to_num(np.asarray(y, dtype=np.float64)) * 32768.0)
    return hashlib.sha256(np.clip(q, -32768, 32767).astype("<i2").tobytes()).hexdigest()


def _reason(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # libsndfile prefixes the file name; keep the part that explains the failure.
    if ": " in msg and msg.startswith("Error opening"):
        msg = msg.split(": ", 1)[1]
    return f"undecodable audio: {msg}"
