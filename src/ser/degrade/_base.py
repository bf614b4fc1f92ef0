"""Shared types, the noise split and small array helpers of :mod:`ser.degrade`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ser.errors import AudioError, ConfigError

RngLike = np.random.Generator | int | None
NoiseSource = str | os.PathLike[str] | Mapping[str, np.ndarray] | None
"""Where noise recordings come from: a folder of ``<name>.flac`` / ``.wav`` files, or arrays by name."""

# ---- noise split -------------------------------------------------------------------------------------------

GENERATED_NOISES: tuple[str, ...] = ("generated-white", "generated-pink")
"""Noises made by code (unit-variance Gaussian white, and pink with a 1/f power spectrum), no file needed."""

TRAIN_NOISES: tuple[str, ...] = ("babble", "volvo_car", "pink", "white", *GENERATED_NOISES)
"""Noises that training augmentation may use (recordings in ``shared/data/noise`` plus the generated ones)."""

HELD_OUT_NOISES: tuple[str, ...] = ("factory1", "icra5_speechlike")
"""Noises kept for the test side (benchmarks, drift tests): never mixed into training data."""

BENCHMARK_CONDITIONS: tuple[str, ...] = (
    "clean",
    "telephone",
    "noise-10db:factory1",
    "noise-0db:factory1",
    "noise-10db:icra5_speechlike",
    "noise-0db:icra5_speechlike",
    "reverb",
    "codec:mp3",
    "codec:opus",
    "codec:vorbis",
    "level-30db",
)
"""The standard test-side conditions (held-out noises only), each a string for :func:`parse`."""

DEFAULT_ROOM_M: tuple[float, float, float] = (6.0, 5.0, 3.0)
"""Shoebox room of :class:`Reverb` specs: length, width, height in metres."""

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


# ---- small helpers -----------------------------------------------------------------------------------------


def as_rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def mono(y: Any, what: str = "audio") -> np.ndarray:
    """``y`` as a finite float32 ``(n,)`` array (a copy is not guaranteed)."""
    arr = np.asarray(y, dtype=np.float32)
    if arr.ndim != 1:
        raise ConfigError(f"{what} must be mono with shape (n_samples,), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise AudioError(f"{what} has non-finite samples (NaN or Inf)")
    return arr


def fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """Crop the end of ``y`` or pad it with zeros to exactly ``n`` samples; float32."""
    y = np.asarray(y, dtype=np.float32)
    if len(y) >= n:
        return np.ascontiguousarray(y[:n])
    return np.concatenate([y, np.zeros(n - len(y), dtype=np.float32)])


def power(y: np.ndarray) -> float:
    return float(np.mean(np.square(y, dtype=np.float64))) if len(y) else 0.0


def check_sr(sr: int) -> int:
    if int(sr) != sr or sr <= 0:
        raise ConfigError(f"sample rate must be a positive integer (Hz), got {sr}")
    return int(sr)
