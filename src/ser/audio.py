"""Audio loading: anything libsndfile decodes, any rate and channel count → 16 kHz mono float32.

Pure helpers (``to_mono``, ``resample``, ``pcm_hash``, ``check_header``, ``full_scale_count``,
:class:`BlockResampler`) are separated from file I/O (``probe``, ``decode``, ``load_audio``, ``decode_bytes``).
The format is detected from the file's content, not its extension, so a FLAC renamed ``.wav`` still loads, and a
text file renamed ``.wav`` fails with an :class:`AudioError`.

Decoding is bounded and streamed (:func:`decode`): the header is checked against :class:`DecodeLimits` (sample
rate, channels, duration, decoded size = frames × channels) before a sample is decoded, and the samples are then
read in blocks, each downmixed and resampled (soxr's streaming resampler) before the next is read, so memory
stays proportional to the mono result at the target rate, whatever the file declares. The output is the same,
sample for sample, as decoding the whole file at once and resampling it in one call.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from ser import TARGET_SR
from ser.errors import AudioError, Cancelled

Source = str | Path | BinaryIO

MIN_SAMPLE_RATE = 1000
"""Lowest sample rate :class:`DecodeLimits` accept by default (Hz)."""
UNKNOWN_FRAMES = 1 << 62
"""libsndfile reports a frame count at least this large (``SF_COUNT_MAX``) when the header does not say, e.g. a
FLAC stream written to a pipe; :func:`decode` then bounds the length while decoding."""
FULL_SCALE = 0.999
"""A sample whose magnitude is at least this (about -0.01 dBFS) counts as clipped in :attr:`Decoded.clipped`."""
BLOCK_FRAMES = 65536
"""Frames read per block by :func:`decode` (at most 65536 × channels × 4 bytes held at once)."""


class AudioLimitError(AudioError):
    """Audio refused by a :class:`DecodeLimits` bound. ``code``: ``audio_too_long`` (duration) or
    ``audio_too_large`` (sample rate, channels, or decoded size)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds :func:`decode` checks on the header before decoding, and on the samples while decoding. ``None``
    leaves a bound off.

    ``max_samples`` bounds the decoded size, frames × channels (what decoding costs), beside the duration and
    the ceilings on sample rate and channel count."""

    max_s: float | None = None
    max_sample_rate: int | None = 192_000
    max_channels: int | None = 8
    max_samples: int | None = None
    min_sample_rate: int | None = MIN_SAMPLE_RATE


UNBOUNDED = DecodeLimits(max_sample_rate=None, max_channels=None, min_sample_rate=None)
"""No bound at all (local files: ``ser predict``)."""


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


@dataclass(frozen=True)
class Decoded:
    """What :func:`decode` returns: ``audio`` mono float32 ``(n,)`` at ``sample_rate`` (``(channels, n)`` when
    decoded with ``split_channels``); ``info`` the header;
    ``frames`` the frames actually decoded (at ``info.sample_rate``); ``clipped`` the fraction of decoded
    samples (all channels, native rate) at full scale (:data:`FULL_SCALE`)."""

    audio: np.ndarray
    sample_rate: int
    info: AudioInfo
    frames: int
    clipped: float


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


def check_header(info: AudioInfo, limits: DecodeLimits) -> None:
    """Refuse (:class:`AudioLimitError`) a header that ``limits`` do not allow: sample rate outside
    ``min_sample_rate``..``max_sample_rate``, more than ``max_channels``, longer than ``max_s``, or more than
    ``max_samples`` frames × channels. A header without a frame count (:data:`UNKNOWN_FRAMES`) passes the last
    two; :func:`decode` then checks them while decoding."""
    rate, ch = info.sample_rate, info.channels
    lo, hi = limits.min_sample_rate, limits.max_sample_rate
    if (lo is not None and rate < lo) or (hi is not None and rate > hi):
        raise AudioLimitError("audio_too_large", f"sample rate {rate} Hz outside {lo or 1}..{hi or 'any'} Hz")
    if limits.max_channels is not None and ch > limits.max_channels:
        raise AudioLimitError("audio_too_large", f"{ch} channels (at most {limits.max_channels})")
    if info.frames >= UNKNOWN_FRAMES:
        return
    check_length(info.frames, rate, ch, limits)


def check_length(frames: int, rate: int, channels: int, limits: DecodeLimits) -> None:
    """Refuse (:class:`AudioLimitError`) ``frames`` at ``rate`` Hz over ``channels`` that pass ``max_s`` or
    ``max_samples``."""
    if limits.max_s is not None and frames > limits.max_s * rate + 1e-6:
        raise AudioLimitError(
            "audio_too_long", f"audio of {frames / rate:.1f} s exceeds the limit of {limits.max_s:g} s"
        )
    if limits.max_samples is not None and frames * channels > limits.max_samples:
        raise AudioLimitError(
            "audio_too_large",
            f"{frames} frames × {channels} channels = {frames * channels} samples to decode "
            f"(at most {limits.max_samples}: lower the sample rate or the channel count)",
        )


def full_scale_count(block: np.ndarray) -> int:
    """Number of samples of ``block`` (any shape) whose magnitude is at least :data:`FULL_SCALE`."""
    return int(np.count_nonzero(np.abs(block) >= FULL_SCALE))


def output_length(frames: int, orig_sr: int, target_sr: int) -> int:
    """Samples soxr makes of ``frames`` at ``orig_sr`` resampled to ``target_sr`` (the rounded ratio)."""
    return frames if orig_sr == target_sr else (2 * frames * target_sr + orig_sr) // (2 * orig_sr)


class BlockResampler:
    """Streaming mono resampling in blocks (soxr VHQ ``ResampleStream``; a pass-through when the rates match).
    Feeding a signal block by block and then :meth:`flush` gives the same samples as :func:`resample` on the
    whole signal."""

    def __init__(self, orig_sr: int, target_sr: int = TARGET_SR):
        self._stream = (
            None if orig_sr == target_sr else soxr.ResampleStream(orig_sr, target_sr, 1, dtype="float32", quality="VHQ")
        )

    def __call__(self, block: np.ndarray) -> np.ndarray:
        y = np.asarray(block, dtype=np.float32)
        if self._stream is None:
            return y
        return np.asarray(self._stream.resample_chunk(y, last=False), dtype=np.float32)

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, np.float32)
        return np.asarray(self._stream.resample_chunk(np.zeros(0, np.float32), last=True), dtype=np.float32)


class _Growing:
    """A float32 buffer appended to in place, preallocated to the expected length (pages never written are never
    resident) and doubled when a file holds more than its header said."""

    def __init__(self, expected: int):
        self.buf = np.empty(max(expected, 1024), np.float32)
        self.n = 0

    def append(self, y: np.ndarray) -> None:
        if self.n + y.size > self.buf.size:
            bigger = np.empty(max(2 * self.buf.size, self.n + y.size), np.float32)
            bigger[: self.n] = self.buf[: self.n]
            self.buf = bigger
        self.buf[self.n : self.n + y.size] = y
        self.n += y.size

    def result(self) -> np.ndarray:
        return self.buf[: self.n]


def decode(
    src: Source,
    sr: int = TARGET_SR,
    limits: DecodeLimits | None = None,
    *,
    allow_nonfinite: bool = False,
    should_stop: Callable[[], bool] | None = None,
    check: Callable[[AudioInfo], None] | None = None,
    block_frames: int = BLOCK_FRAMES,
    split_channels: bool = False,
) -> Decoded:
    """Decode ``src`` to mono float32 at ``sr`` Hz within ``limits`` (default: only the rate and channel
    ceilings), block by block: each block of ``block_frames`` frames is downmixed and resampled before the next
    is read, so memory stays proportional to the result.

    The header is checked (:func:`check_header`, then ``check(info)`` if given, e.g. a caller's own bound)
    before any sample is decoded; the duration and size are checked again as blocks arrive (a header may not
    say). ``should_stop()`` is called before each block: when it returns true, :class:`ser.errors.Cancelled` is
    raised (a timed-out request stops its decoding). Raises :class:`AudioError` (:class:`AudioLimitError` for a
    bound) for anything not decodable, empty, over a bound, or (unless ``allow_nonfinite``) NaN / Inf.

    ``split_channels``: keep the channels apart (a stereo call: agent and customer) instead of downmixing; the
    result's ``audio`` is then ``(channels, n)``, each channel resampled on its own."""
    limits = limits or DecodeLimits()
    try:
        f = sf.SoundFile(src)
    except Exception as exc:  # libsndfile raises several types; all mean "not decodable"
        raise AudioError(_reason(exc)) from exc
    with f:
        info = AudioInfo(int(f.samplerate), int(f.channels), int(f.frames), str(f.format), str(f.subtype))
        if info.sample_rate <= 0 or info.channels <= 0:
            raise AudioError(f"invalid header: {info.sample_rate} Hz, {info.channels} channels")
        check_header(info, limits)
        if check is not None:
            check(info)
        expected = output_length(min(info.frames, _max_frames(info, limits)), info.sample_rate, sr)
        lanes = info.channels if split_channels else 1
        outs = [_Growing(expected) for _ in range(lanes)]
        rss = [BlockResampler(info.sample_rate, sr) for _ in range(lanes)]
        frames = clipped = 0
        while True:
            if should_stop is not None and should_stop():
                raise Cancelled("decoding stopped: the request was cancelled")
            try:
                block = f.read(block_frames, dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioError(_reason(exc)) from exc
            if not len(block):
                break
            frames += len(block)
            check_length(frames, info.sample_rate, info.channels, limits)
            clipped += full_scale_count(block)
            with np.errstate(invalid="ignore", over="ignore"):  # NaN / Inf are refused just below
                lane_blocks = list(np.ascontiguousarray(block.T)) if split_channels else [to_mono(block)]
            for out, rs, y in zip(outs, rss, lane_blocks, strict=True):
                if not allow_nonfinite and not np.all(np.isfinite(y)):
                    raise AudioError("non-finite samples (NaN or Inf)")
                out.append(_finite(rs(y), allow_nonfinite))
    if frames == 0:
        raise AudioError("no audio samples (empty stream)")
    for out, rs in zip(outs, rss, strict=True):
        out.append(_finite(rs.flush(), allow_nonfinite))
    audio = np.stack([out.result() for out in outs]) if split_channels else outs[0].result()
    return Decoded(audio, sr, info, frames, clipped / (frames * info.channels))


def _finite(y: np.ndarray, allow_nonfinite: bool) -> np.ndarray:
    """``y``, refused when it holds NaN / Inf: finite samples far outside [-1, 1] (float files hold any value)
    can overflow float32 when resampled."""
    if not allow_nonfinite and not np.all(np.isfinite(y)):
        raise AudioError("non-finite samples after resampling (sample values far outside [-1, 1])")
    return y


def _max_frames(info: AudioInfo, limits: DecodeLimits) -> int:
    """The most frames ``limits`` let a file at ``info``'s rate and channel count hold."""
    bounds = [UNKNOWN_FRAMES]
    if limits.max_s is not None:
        bounds.append(int(limits.max_s * info.sample_rate) + 1)
    if limits.max_samples is not None:
        bounds.append(limits.max_samples // info.channels + 1)
    return min(bounds)


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


def decode_bytes(data: bytes, sr: int = TARGET_SR, limits: DecodeLimits | None = None) -> np.ndarray:
    """Like :func:`load_audio` for an in-memory file (an upload), decoded within ``limits`` (:func:`decode`)."""
    if not data:
        raise AudioError("empty file (0 bytes)")
    return decode(io.BytesIO(data), sr, limits).audio


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
