"""Training-time data augmentation: waveform transforms, SpecAugment masks, and a leakage guard.

Waveform (``augment_waveform``), applied in this order, each with its own probability:
time stretch → pitch shift → time shift → gain → additive noise.

- Time stretch, pitch shift, time shift and gain use audiomentations (``TimeStretch``, ``PitchShift``,
  ``Shift``, ``Gain``; parameter names as of audiomentations 0.43). audiomentations draws its parameters from
  the global ``random`` module; here every parameter is drawn from *our* ``numpy.random.Generator`` and handed to
  the transform as a fixed range ``[v, v]`` with ``p=1``, so results are reproducible from a seed and do not
  depend on, or disturb, global random state.
- Noise is white Gaussian noise scaled to an exact signal-to-noise ratio ``SNR = 10·log10(P_signal / P_noise)``
  in dB, drawn from the same generator (audiomentations' ``AddGaussianSNR`` uses the global NumPy state and
  only approximates the target SNR).

Formant shift (``formant_shift``): vocal tract length perturbation (VTLP, Jaitly & Hinton 2013), a speaker
variation for robustness variants (:mod:`ser.train.robust`): the spectral envelope is warped along the frequency
axis by a factor ``alpha`` (formants move from ``f`` to about ``alpha * f``), pitch and timing unchanged.

Spectrogram (``spec_augment``): SpecAugment (Park et al., 2019) frequency and time masks on the last two axes
``(..., F, T)`` of a NumPy array or a torch tensor; each item of a batch gets its own masks.

Guard: :func:`mark_augmented` adds a boolean ``augmented`` column to a table of examples, and
:func:`assert_no_augmented_in_eval` raises :class:`~ser.errors.LeakageError` if any augmented row sits in a
held-out role (anything but ``train``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ser import TARGET_SR
from ser.errors import ConfigError, LeakageError, validation_reason

RngLike = np.random.Generator | int | None
Range = tuple[float, float]


class AugmentConfig(BaseModel):
    """Probabilities and ranges of every augmentation. Ranges are ``(low, high)``, drawn uniformly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p_noise: float = Field(0.5, ge=0, le=1, description="probability of additive white noise")
    snr_db: Range = Field((10.0, 30.0), description="signal-to-noise ratio of the added noise (dB)")
    p_gain: float = Field(0.5, ge=0, le=1, description="probability of a gain change")
    gain_db: Range = Field((-6.0, 6.0), description="gain (dB)")
    p_shift: float = Field(0.5, ge=0, le=1, description="probability of a time shift")
    shift_s: Range = Field((-0.1, 0.1), description="time shift (s); positive delays the signal")
    shift_rollover: bool = Field(False, description="wrap shifted-out samples around instead of zero-filling")
    shift_fade_s: float = Field(0.005, ge=0, description="fade at the shift's seam (s) against clicks; 0 = none")
    p_stretch: float = Field(0.25, ge=0, le=1, description="probability of a time stretch")
    stretch_rate: Range = Field((0.9, 1.1), description="speed factor (> 1 is faster), pitch unchanged")
    p_pitch: float = Field(0.25, ge=0, le=1, description="probability of a pitch shift")
    pitch_semitones: Range = Field((-2.0, 2.0), description="pitch shift (semitones), duration unchanged")
    keep_length: bool = Field(True, description="time stretch pads or crops back to the input length")
    p_specaugment: float = Field(1.0, ge=0, le=1, description="probability of masking a spectrogram")
    freq_masks: int = Field(2, ge=0, description="frequency masks per spectrogram")
    freq_mask_max: int = Field(8, ge=0, description="largest frequency mask (bins); widths are 0..max")
    time_masks: int = Field(2, ge=0, description="time masks per spectrogram")
    time_mask_max: int = Field(20, ge=0, description="largest time mask (frames)")
    time_mask_max_frac: float = Field(0.2, gt=0, le=1, description="a time mask covers at most this share of T")
    mask_value: Literal["mean", "zero", "min"] = Field(
        "mean", description="fill: the spectrogram's mean (good for dB log-mels), 0, or its minimum"
    )

    @model_validator(mode="after")
    def _ranges(self) -> AugmentConfig:
        for name in ("snr_db", "gain_db", "shift_s", "stretch_rate", "pitch_semitones"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: low {lo} > high {hi}")
        if self.stretch_rate[0] <= 0:
            raise ValueError("stretch_rate must be positive")
        return self


def make_augment_config(data: Mapping[str, Any] | None = None) -> AugmentConfig:
    """Build an :class:`AugmentConfig`; invalid values raise :class:`ConfigError` (one line)."""
    from pydantic import ValidationError

    try:
        return AugmentConfig(**dict(data or {}))
    except ValidationError as exc:
        raise ConfigError(f"augment config: {validation_reason(exc)}") from None


def as_rng(rng: RngLike) -> np.random.Generator:
    """A NumPy generator from a generator, a seed, or ``None`` (fresh entropy)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


# ---- waveform ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WaveParams:
    """One draw of waveform augmentation; ``None`` means that transform is not applied."""

    stretch_rate: float | None = None
    pitch_semitones: float | None = None
    shift_samples: int | None = None
    gain_db: float | None = None
    snr_db: float | None = None
    noise_seed: int | None = None
    shift_rollover: bool = False
    shift_fade_s: float = 0.005
    keep_length: bool = True


def sample_waveform_params(cfg: AugmentConfig, rng: RngLike, sr: int = TARGET_SR) -> WaveParams:
    """Draw which transforms apply and their values. Always consumes the same number of draws from ``rng``."""
    g = as_rng(rng)

    def draw(p: float, lo: float, hi: float) -> float | None:
        apply, value = g.random() < p, g.uniform(lo, hi)
        return float(value) if apply else None

    stretch = draw(cfg.p_stretch, *cfg.stretch_rate)
    pitch = draw(cfg.p_pitch, *cfg.pitch_semitones)
    shift = draw(cfg.p_shift, *cfg.shift_s)
    gain = draw(cfg.p_gain, *cfg.gain_db)
    snr = draw(cfg.p_noise, *cfg.snr_db)
    seed = int(g.integers(0, 2**63 - 1))
    return WaveParams(
        stretch_rate=stretch,
        pitch_semitones=pitch,
        shift_samples=None if shift is None else round(shift * sr),
        gain_db=gain,
        snr_db=snr,
        noise_seed=seed if snr is not None else None,
        shift_rollover=cfg.shift_rollover,
        shift_fade_s=cfg.shift_fade_s,
        keep_length=cfg.keep_length,
    )


def add_noise(y: np.ndarray, snr_db: float, rng: RngLike) -> np.ndarray:
    """``y`` plus white Gaussian noise at exactly ``snr_db`` dB below the signal's power.

    A silent signal (power 0) is returned unchanged: an SNR relative to silence is undefined.
    """
    y = np.asarray(y, dtype=np.float32)
    power = float(np.mean(np.square(y, dtype=np.float64)))
    if power == 0.0:
        return y.copy()
    noise = as_rng(rng).standard_normal(y.shape)
    noise *= np.sqrt(power / 10.0 ** (snr_db / 10.0) / np.mean(noise**2))
    return (y + noise).astype(np.float32)


def apply_waveform_params(y: np.ndarray, sr: int, params: WaveParams) -> np.ndarray:
    """Apply one draw of :class:`WaveParams` to mono ``y`` (float32). Deterministic."""
    out = np.ascontiguousarray(y, dtype=np.float32)
    if out.ndim != 1:
        raise ConfigError(f"augment_waveform needs a mono 1-D signal, got shape {out.shape}")
    state = random.getstate()  # audiomentations draws (fixed-range) values from `random`: leave it as it was
    try:
        out = _apply_audiomentations(out, sr, params)
    finally:
        random.setstate(state)
    if params.snr_db is not None:
        out = add_noise(out, params.snr_db, params.noise_seed)
    return np.asarray(out, dtype=np.float32)


def _apply_audiomentations(out: np.ndarray, sr: int, params: WaveParams) -> np.ndarray:
    from audiomentations import Gain, PitchShift, Shift, TimeStretch

    if params.stretch_rate is not None:
        r = params.stretch_rate
        out = TimeStretch(min_rate=r, max_rate=r, leave_length_unchanged=params.keep_length, p=1.0)(out, sr)
    if params.pitch_semitones is not None:
        s = params.pitch_semitones
        out = PitchShift(min_semitones=s, max_semitones=s, p=1.0)(out, sr)
    if params.shift_samples:
        n = int(params.shift_samples)
        out = Shift(
            min_shift=n,
            max_shift=n,
            shift_unit="samples",
            rollover=params.shift_rollover,
            fade_duration=params.shift_fade_s,
            p=1.0,
        )(out, sr)
    if params.gain_db is not None:
        g = params.gain_db
        out = Gain(min_gain_db=g, max_gain_db=g, p=1.0)(out, sr)
    return out


def augment_waveform(y: np.ndarray, sr: int, cfg: AugmentConfig, rng: RngLike) -> np.ndarray:
    """Randomly augment mono ``y`` (``(n,)`` float32 at ``sr`` Hz); the same seed gives the same output.

    The output keeps the input length unless ``cfg.keep_length`` is off and a time stretch applied. Values are
    not clipped (a positive gain may exceed ±1).
    """
    return apply_waveform_params(y, sr, sample_waveform_params(cfg, rng, sr))


# ---- formant shift (VTLP) ----------------------------------------------------------------------------------

VTLP_F_HI = 4800.0
"""Jaitly & Hinton's boundary frequency (Hz, at 16 kHz): below ``F_hi * min(alpha, 1) / alpha`` the warp is
``f -> alpha * f``; above it a second line takes the boundary to Nyquist, so the warped axis still spans
``[0, sr/2]``. Scaled by ``sr / 16000`` at other rates."""
VTLP_N_FFT = 512
"""STFT size (32 ms at 16 kHz) of :func:`formant_shift`; hop a quarter of it (Hann, so ISTFT overlap-adds back)."""
VTLP_LPC_ORDER_PER_KHZ = 1.0
"""LPC order of the envelope: ``2 + sr / 1000`` poles (18 at 16 kHz), the textbook rule of one formant pair per
kHz of bandwidth plus two for the glottal and radiation tilt."""
VTLP_MAX_GAIN_DB = 30.0
"""Largest boost or cut (dB) one STFT bin gets: a warped envelope peak over a deep valley stays bounded."""


def vtlp_warp(freqs: np.ndarray, alpha: float, sr: int, f_hi: float | None = None) -> np.ndarray:
    """Jaitly & Hinton's piecewise-linear VTLP warp of frequencies ``freqs`` (Hz, in ``[0, sr/2]``) by ``alpha``.

    ``f -> alpha * f`` up to ``b = f_hi * min(alpha, 1) / alpha``; from there a line to ``(sr/2, sr/2)``. Monotone,
    continuous, ``0 -> 0`` and ``sr/2 -> sr/2``; the identity at ``alpha = 1``. ``f_hi`` defaults to
    :data:`VTLP_F_HI` scaled to ``sr``.
    """
    if not alpha > 0:
        raise ConfigError(f"VTLP warp factor must be positive, got {alpha}")
    nyq = sr / 2.0
    f_hi = VTLP_F_HI * sr / 16000.0 if f_hi is None else float(f_hi)
    b = f_hi * min(alpha, 1.0) / alpha
    f = np.asarray(freqs, dtype=np.float64)
    upper = nyq - (nyq - f_hi * min(alpha, 1.0)) / (nyq - b) * (nyq - f)
    return np.where(f <= b, alpha * f, upper)


def formant_shift(y: np.ndarray, sr: int, alpha: float) -> np.ndarray:
    """``y`` with its formants moved by the VTLP warp ``alpha`` (:func:`vtlp_warp`); pitch, length and level kept.

    ``y``: mono float ``(n,)`` at ``sr`` Hz; returns float32 ``(n,)`` with the input's RMS. ``alpha > 1`` moves
    formants up (a shorter vocal tract: about ``alpha * f`` below :data:`VTLP_F_HI`), ``alpha < 1`` down; the
    robust recipes draw it from ``formant_warp`` (0.9-1.1 by default, Jaitly & Hinton's range). ``alpha == 1``
    returns the input unchanged.

    Hand-written, on purpose: no formant-shift library is a dependency (praat-parselmouth would be one, GPL), and
    warping the whole STFT the way VTLP warps filterbank features would move the harmonics too (a pitch change,
    which ``p_pitch`` draws separately). So each STFT frame's spectral envelope is estimated by linear prediction
    (``librosa.lpc``, order ``2 + sr / 1000``: an all-pole envelope follows formant peaks closely, where a
    cepstrally smoothed one blurs them below its pitch-safe resolution), and each bin ``f`` is scaled by
    ``E(w^-1(f)) / E(f)``, the warped envelope over the original one (bounded by :data:`VTLP_MAX_GAIN_DB`). That is
    a real, positive gain per bin, a time-varying filter that keeps the phase, so the ISTFT adds no phase
    artefacts. It runs on the waveform (librosa STFT / ISTFT), before the degradation chain, so it composes with the
    channel effects whose features the robust variants cache.
    """
    import librosa

    x = np.asarray(y, dtype=np.float32)
    if x.ndim != 1:
        raise ConfigError(f"formant_shift needs a mono 1-D signal, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ConfigError("formant_shift: non-finite samples (NaN or Inf)")
    if alpha == 1.0 or x.size == 0:
        return x.copy()
    n_fft, hop = VTLP_N_FFT, VTLP_N_FFT // 4
    stft = librosa.stft(x, n_fft=n_fft, hop_length=hop, window="hann", center=True, pad_mode="constant")
    # The frames the STFT analysed (centred, zero-padded), windowed, for one LPC fit each. A fixed, tiny dither
    # (-140 dBFS) keeps the fit defined on digital silence; it is not added to the output.
    padded = np.pad(x.astype(np.float64), n_fft // 2)
    frames = librosa.util.frame(padded, frame_length=n_fft, hop_length=hop)[:, : stft.shape[1]]
    frames = frames * np.hanning(n_fft + 2)[1:-1, None] + 1e-7 * np.random.default_rng(0).standard_normal(frames.shape)
    order = round(2 + VTLP_LPC_ORDER_PER_KHZ * sr / 1000)
    with np.errstate(all="ignore"):
        a = librosa.lpc(np.ascontiguousarray(frames.T), order=order, axis=-1)  # (frames, order + 1)
        env = -np.log(np.maximum(np.abs(np.fft.rfft(a, n=n_fft, axis=-1)), 1e-12)).T  # log envelope (bins, frames)
    env = np.nan_to_num(env, nan=0.0, posinf=0.0, neginf=0.0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    source = np.interp(freqs, vtlp_warp(freqs, alpha, sr), freqs)  # w^-1(f): where each bin's envelope comes from
    warped = np.stack([np.interp(source, freqs, env[:, t]) for t in range(env.shape[1])], axis=1)
    limit = VTLP_MAX_GAIN_DB / 20.0 * np.log(10.0)
    gain = np.exp(np.clip(warped - env, -limit, limit))
    out = librosa.istft(stft * gain, hop_length=hop, window="hann", center=True, length=x.size)
    rms_in, rms_out = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))), float(np.sqrt(np.mean(out**2)))
    if rms_out > 0:
        out = out * (rms_in / rms_out)
    return out.astype(np.float32)


# ---- SpecAugment -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mask:
    """One mask: rows (``axis="freq"``) or columns (``axis="time"``) ``start .. start + width - 1``."""

    axis: Literal["freq", "time"]
    start: int
    width: int


def sample_masks(n_freq: int, n_time: int, cfg: AugmentConfig, rng: RngLike) -> list[Mask]:
    """Draw SpecAugment masks for one ``(n_freq, n_time)`` spectrogram (empty when not applied).

    Each frequency mask is ``w ~ U{0..min(freq_mask_max, n_freq)}`` rows at ``f0 ~ U{0..n_freq - w}``; each time
    mask ``w ~ U{0..min(time_mask_max, floor(time_mask_max_frac · n_time))}`` frames. Masks may overlap.
    """
    g = as_rng(rng)
    if g.random() >= cfg.p_specaugment:
        return []
    masks = []
    for axis, count, limit, size in (
        ("freq", cfg.freq_masks, min(cfg.freq_mask_max, n_freq), n_freq),
        ("time", cfg.time_masks, min(cfg.time_mask_max, int(cfg.time_mask_max_frac * n_time)), n_time),
    ):
        for _ in range(count):
            width = int(g.integers(0, limit + 1))
            start = int(g.integers(0, size - width + 1))
            masks.append(Mask(axis, start, width))  # type: ignore[arg-type]
    return masks


def apply_masks(spec: Any, masks: list[Mask], value: float) -> Any:
    """Set the masked rows/columns of the last two axes of ``spec`` (NumPy or torch) to ``value``, in place."""
    for m in masks:
        if m.width <= 0:
            continue
        if m.axis == "freq":
            spec[..., m.start : m.start + m.width, :] = value
        else:
            spec[..., m.start : m.start + m.width] = value
    return spec


def spec_augment(spec: Any, cfg: AugmentConfig, rng: RngLike) -> Any:
    """SpecAugment masks on ``spec`` ``(F, T)`` or a batch ``(..., F, T)``: NumPy array or torch tensor.

    Returns a masked copy of the same type, dtype and device; the input is not modified. Every 2-D item of a
    batch gets its own masks and fill value (``cfg.mask_value`` of that item). Deterministic given ``rng``.
    """
    g = as_rng(rng)
    is_torch = type(spec).__module__.split(".")[0] == "torch"
    out = spec.clone() if is_torch else np.array(spec, copy=True)
    if out.ndim < 2:
        raise ConfigError(f"spec_augment needs (..., F, T), got shape {tuple(out.shape)}")
    n_freq, n_time = int(out.shape[-2]), int(out.shape[-1])
    for idx in np.ndindex(*tuple(out.shape[:-2])):
        item = out[idx] if idx else out
        masks = sample_masks(n_freq, n_time, cfg, g)
        if masks:
            apply_masks(item, masks, _fill(item, cfg.mask_value))
    return out


def _fill(item: Any, how: str) -> float:
    if how == "zero":
        return 0.0
    return float(item.mean() if how == "mean" else item.min())


# ---- leakage guard -----------------------------------------------------------------------------------------

TRAIN_ROLES = frozenset({"train"})


def mark_augmented(frame: pd.DataFrame, augmented: bool = True) -> pd.DataFrame:
    """A copy of ``frame`` with a boolean ``augmented`` column set to ``augmented`` for every row."""
    return frame.assign(augmented=pd.Series(bool(augmented), index=frame.index, dtype=bool))


def assert_no_augmented_in_eval(frames_by_role: Mapping[str, pd.DataFrame]) -> None:
    """Raise :class:`LeakageError` if a held-out role (every role but ``train``) has an augmented row.

    A table without an ``augmented`` column has no augmented rows. Augmented copies belong to training only:
    evaluating on them inflates scores, and a copy of a test utterance in training leaks it.
    """
    for role, frame in frames_by_role.items():
        if role in TRAIN_ROLES or "augmented" not in frame.columns:
            continue
        flags = frame["augmented"].fillna(False).astype(bool)
        if flags.any():
            first = frame.loc[flags].iloc[0]
            which = f" (e.g. utt_id {first['utt_id']!r})" if "utt_id" in frame.columns else ""
            raise LeakageError(
                f"{int(flags.sum())} augmented row(s) in the {role!r} set{which}: augment training data only"
            )
