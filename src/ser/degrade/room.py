"""Room reverberation of :mod:`ser.degrade` (pyroomacoustics shoebox rooms, cached impulse responses)."""

from __future__ import annotations

import functools
import math

import numpy as np

from ser.degrade._base import DEFAULT_ROOM_M, check_sr, mono, power
from ser.errors import ConfigError

# ---- reverberation -----------------------------------------------------------------------------------------


def _positions(room_m: tuple[float, float, float], seed: int) -> tuple[list[float], list[float]]:
    """Source and microphone: ≥ 0.5 m from the walls, 1.0–1.8 m high, ≥ 1 m apart (seeded)."""
    g = np.random.default_rng(seed)
    length, width, height = room_m
    lo = np.array([0.5, 0.5, min(1.0, height / 2)])
    hi = np.array([length - 0.5, width - 0.5, min(1.8, height - 0.3)])
    src = mic = lo
    for _ in range(100):
        src, mic = g.uniform(lo, hi), g.uniform(lo, hi)
        if np.linalg.norm(src - mic) >= 1.0:
            break
    return [float(v) for v in src], [float(v) for v in mic]


@functools.lru_cache(maxsize=64)
def _rir_cached(rt60_s: float, room_m: tuple[float, float, float], position_seed: int, sr: int) -> np.ndarray:
    try:
        import pyroomacoustics as pra
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError("reverb needs pyroomacoustics: pip install 'ser[ml]'") from exc
    if min(room_m) <= 1.0:
        raise ConfigError(f"room dimensions must exceed 1 m, got {room_m}")
    try:
        absorption, max_order = pra.inverse_sabine(rt60_s, list(room_m))
    except ValueError as exc:
        raise ConfigError(f"RT60 {rt60_s} s is not reachable in a {room_m} m room: {exc}") from exc
    room = pra.ShoeBox(list(room_m), fs=sr, materials=pra.Material(absorption), max_order=max_order)
    src, mic = _positions(room_m, position_seed)
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float32)
    rir.flags.writeable = False
    return rir


def room_impulse_response(
    sr: int,
    rt60_s: float = 0.6,
    *,
    room_m: tuple[float, float, float] = DEFAULT_ROOM_M,
    position_seed: int = 0,
) -> np.ndarray:
    """Impulse response ``(n_taps,)`` float32 of a shoebox room (pyroomacoustics image-source method).

    ``rt60_s`` (s) is the Sabine design reverberation time, turned into wall absorption and reflection order by
    ``pyroomacoustics.inverse_sabine``; the image-source decay measured on the result is typically somewhat longer.
    ``room_m`` is (length, width, height) in metres; ``position_seed`` places source and microphone (≥ 0.5 m from
    walls, ≥ 1 m apart). Deterministic; results are cached per parameter set (a 0.6 s room takes ~1 s to build).
    """
    sr = check_sr(sr)
    if rt60_s <= 0:
        raise ConfigError(f"rt60_s must be positive, got {rt60_s}")
    dims = (float(room_m[0]), float(room_m[1]), float(room_m[2]))
    return _rir_cached(float(rt60_s), dims, int(position_seed), sr).copy()


def convolve_rir(y: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve ``y`` ``(n,)`` float32 with an impulse response ``rir`` ``(n_taps,)`` (same sample rate).

    The output is aligned on the response's direct path (its largest tap), so speech keeps its timing; it is
    cropped to the input length (the tail past the end is dropped) and scaled to the input's RMS level (silence
    stays silence). Returns ``(n,)`` float32.
    """
    from scipy.signal import fftconvolve

    x = mono(y)
    h = mono(rir, "impulse response").astype(np.float64)
    if len(h) == 0 or not np.any(h):
        raise ConfigError("impulse response is empty or all zeros")
    if len(x) == 0:
        return x.copy()
    delay = int(np.argmax(np.abs(h)))
    wet = fftconvolve(x.astype(np.float64), h)[delay : delay + len(x)]
    p_wet = power(wet)
    if p_wet == 0.0:
        return np.zeros_like(x)
    return (wet * math.sqrt(power(x) / p_wet)).astype(np.float32)


def reverberate(
    y: np.ndarray,
    sr: int,
    rt60_s: float = 0.6,
    *,
    room_m: tuple[float, float, float] = DEFAULT_ROOM_M,
    position_seed: int = 0,
) -> np.ndarray:
    """Room reverberation of ``y`` ``(n,)`` float32 at ``sr`` Hz: :func:`room_impulse_response` then
    :func:`convolve_rir`. Returns ``(n,)`` float32, same length and RMS level, aligned on the direct path."""
    return convolve_rir(y, room_impulse_response(sr, rt60_s, room_m=room_m, position_seed=position_seed))
