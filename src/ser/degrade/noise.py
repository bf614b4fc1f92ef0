"""Additive noise of :mod:`ser.degrade`: generated white/pink noise, recordings by name, mixing at an SNR
defined over the whole clip."""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ser import TARGET_SR
from ser.audio import load_audio
from ser.degrade._base import NAME_PATTERN, NoiseSource, RngLike, as_rng, check_sr, mono, power
from ser.errors import ConfigError

# ---- additive noise ----------------------------------------------------------------------------------------


def white_noise(n: int, rng: RngLike) -> np.ndarray:
    """Gaussian white noise ``(n,)`` float32 with unit variance, drawn from ``rng``."""
    return as_rng(rng).standard_normal(int(n)).astype(np.float32)


def pink_noise(n: int, rng: RngLike) -> np.ndarray:
    """Pink noise ``(n,)`` float32 (power spectrum ∝ 1/f, no DC) scaled to unit RMS, drawn from ``rng``."""
    n = int(n)
    w = as_rng(rng).standard_normal(n)
    if n < 4:
        return w.astype(np.float32)
    spec = np.fft.rfft(w)
    f = np.fft.rfftfreq(n)
    spec[0] = 0.0
    spec[1:] /= np.sqrt(f[1:])
    out = np.fft.irfft(spec, n)
    return (out / math.sqrt(power(out))).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _load_noise_cached(path: str, sr: int) -> np.ndarray:
    y = load_audio(path, sr)
    y.flags.writeable = False
    return y


def noise_names(folder: str | os.PathLike[str]) -> tuple[str, ...]:
    """Names (file stems) of the noise recordings in ``folder`` (FLAC, WAV or Ogg files), sorted."""
    d = Path(folder)
    if not d.is_dir():
        raise ConfigError(f"noise folder not found: {d}")
    return tuple(sorted({p.stem for p in d.iterdir() if p.suffix.lower() in (".flac", ".wav", ".ogg")}))


def load_noise(name: str, folder: str | os.PathLike[str], sr: int = TARGET_SR) -> np.ndarray:
    """The noise recording ``<folder>/<name>.flac`` (or ``.wav``/``.ogg``) as mono float32 ``(n,)`` at ``sr`` Hz.

    Read-only and cached per (file, sr). An unknown name raises :class:`ConfigError` listing the available ones.
    """
    if not re.fullmatch(NAME_PATTERN, name or ""):
        raise ConfigError(f"invalid noise name {name!r}")
    d = Path(folder)
    for ext in (".flac", ".wav", ".ogg"):
        path = d / f"{name}{ext}"
        if path.is_file():
            return _load_noise_cached(str(path.resolve()), check_sr(sr))
    raise ConfigError(f"noise {name!r} not found in {d}; available: {', '.join(noise_names(d)) or 'none'}")


def mix_at_snr(y: np.ndarray, noise: np.ndarray, snr_db: float, rng: RngLike) -> np.ndarray:
    """``y`` plus ``noise`` scaled so that the SNR over the whole clip is exactly ``snr_db`` dB.

    ``y``: ``(n,)`` float32; ``noise``: ``(m,)`` float32, any length: a segment of ``n`` samples starting at an
    offset drawn from ``rng`` is used, wrapping around (looping) when ``m < n`` or the segment runs off the end.
    SNR = 10·log10(mean(y²) / mean(segment²)) over the same ``n`` samples. A silent ``y`` is returned unchanged
    (an SNR against silence is undefined); a silent noise segment raises :class:`ConfigError`. Returns ``(n,)``
    float32 (not clipped).
    """
    x = mono(y)
    nz = mono(noise, "noise")
    p_sig = power(x)
    if p_sig == 0.0:  # also an empty clip
        return x.copy()
    if len(nz) == 0:
        raise ConfigError("noise is empty")
    offset = int(as_rng(rng).integers(0, len(nz)))
    seg = np.take(nz, (offset + np.arange(len(x))) % len(nz)).astype(np.float64)
    p_noise = power(seg)
    if p_noise == 0.0:
        raise ConfigError("noise segment is silent: cannot reach an SNR")
    scale = math.sqrt(p_sig / (p_noise * 10.0 ** (float(snr_db) / 10.0)))
    return (x.astype(np.float64) + scale * seg).astype(np.float32)


def noise_array(name: str, n: int, sr: int, noises: NoiseSource, rng: np.random.Generator) -> np.ndarray:
    if name == "generated-white":
        return white_noise(n, rng)
    if name == "generated-pink":
        return pink_noise(n, rng)
    if isinstance(noises, Mapping):
        if name not in noises:
            raise ConfigError(f"noise {name!r} not among the given arrays ({', '.join(sorted(noises)) or 'none'})")
        return mono(noises[name], f"noise {name!r}")
    if noises is None:
        raise ConfigError(f"noise {name!r} is a recording: pass noises=<folder> or a mapping of arrays")
    return load_noise(name, noises, sr)
