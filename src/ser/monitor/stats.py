"""Input statistics of one clip: what the prediction log and the training reference record about the audio.

Pure functions of arrays. ``audio`` is the decoded clip the model was given: mono float32 ``(n_samples,)`` at
``sr`` Hz (16 kHz, :data:`ser.TARGET_SR`, in the service and in the reference), nominally in [-1, 1]. The live
log and the reference must compute the statistics on the same kind of signal (the decoded 16 kHz mono clip),
so that a difference between them is a difference of the inputs, not of the measurement. Facts about the file
before decoding (native rate, channels, container, codec) are passed in by the caller, who has read the header.

=====================  ======  ==================================================================================
field                  unit    meaning
=====================  ======  ==================================================================================
``native_sr``          Hz      sample rate of the file as uploaded (None: unknown, e.g. a raw PCM stream)
``channels``           count   channels of the file as uploaded (None: unknown)
``container``          text    libsndfile major format (``WAV``, ``FLAC``, ``OGG``, ``MP3``...) or None
``codec``              text    libsndfile subtype (``PCM_16``, ``FLOAT``, ``VORBIS``...) or None
``rms_dbfs``           dBFS    RMS level of the whole clip; a full-scale sine is -3.01 dBFS; floor -120
``peak_dbfs``          dBFS    largest absolute sample; full scale (1.0) is 0 dBFS; floor -120
``clipped_fraction``   0..1    share of samples with ``|x| >= CLIP_LEVEL`` (0.999: the top of 16-bit PCM)
``speech_fraction``    0..1    share of 30 ms frames that :func:`ser.vad.vad_flags` marks as speech
``snr_db``             dB      estimated speech-to-noise ratio (see :func:`snr_estimate`), in [-20, 100]
``high_band_share``    0..1    share of the clip's energy above 4 kHz (telephone / 8 kHz audio: ~0)
``mel_mean``           dB      ``(n_mels,)`` mean over time of each log-mel band of what the model saw
``mel_std``            dB      ``(n_mels,)`` standard deviation over time of the same bands
=====================  ======  ==================================================================================

**Speech fraction** uses the service's voice decision (webrtcvad and its -50 dBFS level gate), so a very quiet
upload reads as silence, as it does for the service.

**SNR estimate** from frame-energy percentiles: the clip is cut into 30 ms frames; the noise power is the mean
power of the quietest 10 % of frames, the speech power the mean power of the loudest half;
``snr_db = 10·log10((P_speech − P_noise) / P_noise)``, powers floored at -120 dBFS, clipped to [-20, 100]. Not
from the VAD's speech / non-speech frames: webrtcvad's decisions depend on the level (a 30 dB quieter copy of a
clip loses most of its speech frames), and the SNR must not move when only the level does; percentiles of the
frame powers are level-invariant. It is an indicator for drift (noisy uploads drive it down), not a calibrated
measurement: clean studio speech (RAVDESS, whose pauses are close to digital silence) reads 55-90 dB; noise
mixed in over the whole clip at 5 dB reads 8-12 dB, at 20 dB about 24 dB (the loudest half of a clip holds more
than its average speech power). Near digital silence the floor is the -120 dB clamp, so there a level drop lowers
the reading too (RAVDESS 30 dB quieter: 45-60 dB). A clip that is
speech from end to end still has pauses between words, so it reads lower than the same speech with silence
around it.

**Narrow band.** ``high_band_share`` is the energy above 4 kHz over the energy above 50 Hz, from a Hann-windowed
512-point power spectrum averaged over the clip (16 kHz audio: 4-8 kHz is the upper half). Wide-band speech
holds a few per cent there; a telephone channel (300-3400 Hz) or audio recorded at 8 kHz and upsampled holds
almost none.

**Log-mel bands.** ``mel_mean`` / ``mel_std`` summarise the model's own input: pass its log-mel rows (the
features the predictor computed, after the silence trim; :func:`seen_logmel` takes them out of a stacked input)
as ``logmel``; without them the log-mel is computed here with the default :class:`~ser.features.FeatureConfig`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ser import TARGET_SR
from ser.errors import AudioError
from ser.vad import VadConfig, frame_levels_db, vad_flags

CLIP_LEVEL = 0.999
"""|sample| at or above which a sample counts as clipped (16-bit full scale is 32767/32768 = 0.99997)."""
HIGH_BAND_HZ = 4000.0
FLOOR_DB = -120.0
SNR_RANGE = (-20.0, 100.0)

SCALAR_FIELDS: tuple[str, ...] = (
    "rms_dbfs",
    "peak_dbfs",
    "clipped_fraction",
    "speech_fraction",
    "snr_db",
    "high_band_share",
)
"""The continuous per-clip statistics (plus ``duration_s`` from the record), compared with KS and PSI."""
CATEGORICAL_FIELDS: tuple[str, ...] = ("native_sr", "channels", "container", "codec")
"""The file facts, compared as category mixes."""
BAND_FIELDS: tuple[str, ...] = ("mel_mean", "mel_std")
"""The per-band vectors ``(n_mels,)``."""


@dataclass(frozen=True)
class InputStats:
    """Statistics of one clip (units in the module docstring). ``mel_mean`` / ``mel_std``: float32 ``(n_mels,)``."""

    rms_dbfs: float
    peak_dbfs: float
    clipped_fraction: float
    speech_fraction: float
    snr_db: float
    high_band_share: float
    mel_mean: np.ndarray = field(repr=False)
    mel_std: np.ndarray = field(repr=False)
    native_sr: int | None = None
    channels: int | None = None
    container: str | None = None
    codec: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (the vectors as lists of floats), the row layout of the log and the reference."""
        d = asdict(self)
        d["mel_mean"] = [float(v) for v in np.asarray(self.mel_mean, dtype=np.float32)]
        d["mel_std"] = [float(v) for v in np.asarray(self.mel_std, dtype=np.float32)]
        return d


def _db(power: float) -> float:
    return float(max(10.0 * np.log10(max(power, 1e-30)), FLOOR_DB))


def level_stats(audio: np.ndarray) -> tuple[float, float, float]:
    """``(rms_dbfs, peak_dbfs, clipped_fraction)`` of ``audio`` ``(n,)``."""
    x = np.asarray(audio, dtype=np.float64)
    if x.size == 0:
        return FLOOR_DB, FLOOR_DB, 0.0
    ax = np.abs(x)
    return _db(float(np.mean(x * x))), _db(float(ax.max()) ** 2), float(np.mean(ax >= CLIP_LEVEL))


def snr_estimate(audio: np.ndarray, frame_len: int = 480) -> float:
    """Speech-to-noise ratio (dB) of ``audio`` ``(n,)`` from the powers of its ``frame_len``-sample frames (see the
    module docstring); ``SNR_RANGE[0]`` for a clip shorter than one frame."""
    levels = frame_levels_db(audio, frame_len)
    if levels.size == 0:
        return SNR_RANGE[0]
    power = np.sort(10.0 ** (levels / 10.0))
    p_noise = float(power[: max(1, int(np.ceil(0.1 * power.size)))].mean())
    p_speech = float(power[power.size // 2 :].mean())
    snr = 10.0 * np.log10(max(p_speech - p_noise, p_noise * 1e-2) / p_noise)
    return float(np.clip(snr, *SNR_RANGE))


def high_band_share(audio: np.ndarray, sr: int, *, cutoff_hz: float = HIGH_BAND_HZ, n_fft: int = 512) -> float:
    """Share of the energy above ``cutoff_hz`` in the energy above 50 Hz of ``audio`` ``(n,)`` at ``sr`` Hz (0 for
    silence, and when ``cutoff_hz`` is at or above the Nyquist frequency)."""
    x = np.asarray(audio, dtype=np.float64)
    if cutoff_hz >= sr / 2:
        return 0.0
    if x.size < n_fft:
        x = np.concatenate([x, np.zeros(n_fft - x.size)])
    n = x.size // n_fft
    frames = x[: n * n_fft].reshape(n, n_fft) * np.hanning(n_fft)
    power = np.sum(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    total = float(power[freqs >= 50.0].sum())
    return float(power[freqs >= cutoff_hz].sum() / total) if total > 1e-20 else 0.0


def seen_logmel(features: np.ndarray, kind: str, n_mels: int) -> np.ndarray | None:
    """The log-mel rows ``(n_mels, T)`` of a model input ``(n_features, T)`` of frame ``kind`` (``logmel`` or
    ``logmel+...``: log-mel stacked first), or None when the input does not start with log-mel."""
    if str(kind).split("+")[0] != "logmel":
        return None
    return np.asarray(features)[:n_mels]


def default_logmel(audio: np.ndarray, sr: int = TARGET_SR) -> np.ndarray:
    """Log-mel ``(n_mels, T)`` of ``audio`` with the default :class:`~ser.features.FeatureConfig` (at ``sr``)."""
    from ser.features import FeatureConfig
    from ser.features.frames import compute

    return compute(np.asarray(audio, dtype=np.float32), FeatureConfig(sr=sr), ("logmel",))["logmel"]


def input_stats(
    audio: np.ndarray,
    sr: int = TARGET_SR,
    *,
    logmel: np.ndarray | None = None,
    native_sr: int | None = None,
    channels: int | None = None,
    container: str | None = None,
    codec: str | None = None,
    vad: VadConfig | None = None,
) -> InputStats:
    """The :class:`InputStats` of one decoded clip ``audio`` ``(n,)`` at ``sr`` Hz.

    ``logmel``: the model's log-mel ``(n_mels, T)`` (dB) of this clip; computed with the defaults when None.
    ``native_sr`` / ``channels`` / ``container`` / ``codec``: header facts of the uploaded file, stored as given.
    ``vad``: the VAD settings (default :class:`~ser.vad.VadConfig`, 30 ms frames).
    """
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(f"audio must be mono (n_samples,), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise AudioError("non-finite samples (NaN or Inf)")
    vad = vad or VadConfig()
    rms, peak, clipped = level_stats(x)
    flags = vad_flags(x, sr, vad)
    if logmel is None:
        logmel = default_logmel(x, sr) if x.size >= 400 else np.zeros((64, 0), dtype=np.float32)
    lm = np.asarray(logmel, dtype=np.float64)
    if lm.ndim != 2:
        raise AudioError(f"logmel must be (n_mels, frames), got shape {lm.shape}")
    mel_mean = lm.mean(axis=1) if lm.shape[1] else np.full(lm.shape[0], np.nan)
    mel_std = lm.std(axis=1) if lm.shape[1] else np.full(lm.shape[0], np.nan)
    return InputStats(
        rms_dbfs=rms,
        peak_dbfs=peak,
        clipped_fraction=clipped,
        speech_fraction=float(flags.mean()) if flags.size else 0.0,
        snr_db=snr_estimate(x, sr * 30 // 1000),
        high_band_share=high_band_share(x, sr),
        mel_mean=mel_mean.astype(np.float32),
        mel_std=mel_std.astype(np.float32),
        native_sr=None if native_sr is None else int(native_sr),
        channels=None if channels is None else int(channels),
        container=container,
        codec=codec,
    )
