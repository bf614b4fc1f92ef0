"""Seeded channel and noise degradations of speech: telephone band, G.711, lossy codecs, reverb, noise, level.

Every function takes and returns mono float32 audio of shape ``(n_samples,)`` at ``sr`` Hz (the project works at
``ser.TARGET_SR`` = 16 kHz) and keeps the length. Randomness comes only from the ``rng`` argument (a
:class:`numpy.random.Generator` or an integer seed): the same input, spec and seed give the same output, bit for
bit, on the same installed libraries (libsndfile's encoders, soxr and pyroomacoustics may change between versions).
Nothing reads or changes global random state. Inputs must be finite (else :class:`~ser.errors.AudioError`); outputs
are finite.

Building blocks (pure functions):
    :func:`bandpass`, :func:`mulaw_encode` / :func:`mulaw_decode`, :func:`alaw_encode` / :func:`alaw_decode`,
    :func:`g711`, :func:`telephone`, :func:`codec_roundtrip`, :func:`room_impulse_response`,
    :func:`convolve_rir`, :func:`reverberate`, :func:`white_noise`, :func:`pink_noise`, :func:`load_noise`,
    :func:`mix_at_snr`, :func:`gain`.

Specs: :class:`Telephone`, :class:`Codec`, :class:`Reverb`, :class:`Noise`, :class:`Gain` (frozen pydantic
models, together the :data:`Degradation` union); a chain is a tuple of them. :func:`apply` runs a spec, a chain or
a condition string; :func:`parse` / :func:`format_chain` convert between chains and strings.

Condition strings (``"telephone+noise:babble@10"``)::

    chain     := "clean" | step ("+" step)*          "clean" (no degradation) stands alone
    step      := "telephone" [":" LAW]               LAW: mulaw (default) | alaw | none
               | "codec:" CODEC ["@" LEVEL]          CODEC: mp3 | opus | vorbis; LEVEL: libsndfile compression
                                                     level in [0, 1] (default 0.9; 1 = smallest file)
               | "reverb" [":" RT60 ["@" SEED]]      RT60 in s (default 0.6), SEED places source and mic (default 0)
               | "noise:" NAME "@" SNR               additive noise at SNR dB over the whole clip
               | "noise-" N "db:" NAME               alias of noise:NAME@N (N a whole number, e.g. noise-10db:babble)
               | "gain:" DB [":clip"]                level change in dB, optionally clipped at full scale
               | "level-" N "db"                     alias of gain:-N (e.g. level-30db)

``+`` separates steps (a ``+`` before a digit is a sign: ``gain:+6``); steps run left to right. NAME is a noise
recording in the noise folder (``babble``, ``factory1``, ...) or a generated noise, ``generated-white`` /
``generated-pink``. Whitespace around steps is ignored; anything else raises :class:`~ser.errors.ConfigError`
saying which step is wrong.

Noise split (:data:`TRAIN_NOISES`, :data:`HELD_OUT_NOISES`): training draws use babble, volvo_car, pink, white and
the generated noises; factory1 and icra5_speechlike are kept for the test side, and
:func:`sample_training_degradation` refuses them unless told otherwise.
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from ser import TARGET_SR
from ser.audio import load_audio, resample
from ser.errors import AudioError, ConfigError, LeakageError

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

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


# ---- small helpers -----------------------------------------------------------------------------------------


def _as_rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _mono(y: Any, what: str = "audio") -> np.ndarray:
    """``y`` as a finite float32 ``(n,)`` array (a copy is not guaranteed)."""
    arr = np.asarray(y, dtype=np.float32)
    if arr.ndim != 1:
        raise ConfigError(f"{what} must be mono with shape (n_samples,), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise AudioError(f"{what} has non-finite samples (NaN or Inf)")
    return arr


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """Crop the end of ``y`` or pad it with zeros to exactly ``n`` samples; float32."""
    y = np.asarray(y, dtype=np.float32)
    if len(y) >= n:
        return np.ascontiguousarray(y[:n])
    return np.concatenate([y, np.zeros(n - len(y), dtype=np.float32)])


def _power(y: np.ndarray) -> float:
    return float(np.mean(np.square(y, dtype=np.float64))) if len(y) else 0.0


def _check_sr(sr: int) -> int:
    if int(sr) != sr or sr <= 0:
        raise ConfigError(f"sample rate must be a positive integer (Hz), got {sr}")
    return int(sr)


# ---- level -------------------------------------------------------------------------------------------------


def gain(y: np.ndarray, gain_db: float, *, clip: bool = False) -> np.ndarray:
    """Scale ``y`` ``(n,)`` float32 by ``gain_db`` dB (amplitude factor ``10**(gain_db/20)``).

    With ``clip`` the result is clipped to full scale [-1, 1] (a saturating recorder). Keeps length and dtype.
    """
    x = _mono(y)
    out = x.astype(np.float64) * 10.0 ** (float(gain_db) / 20.0)
    if clip:
        out = np.clip(out, -1.0, 1.0)
    return out.astype(np.float32)


# ---- telephone band and G.711 ------------------------------------------------------------------------------


def bandpass(y: np.ndarray, sr: int, low_hz: float = 300.0, high_hz: float = 3400.0, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth band-pass of ``y`` ``(n,)`` float32 at ``sr`` Hz, pass band ``low_hz``..``high_hz``.

    ``scipy.signal.butter`` of ``order`` run forwards and backwards (``sosfiltfilt``), so the magnitude
    response is squared (-6 dB at the edges) and there is no delay. Keeps length and dtype.
    """
    from scipy.signal import butter, sosfiltfilt

    x = _mono(y)
    sr = _check_sr(sr)
    if not 0 < low_hz < high_hz < sr / 2:
        raise ConfigError(f"band-pass needs 0 < low_hz < high_hz < sr/2, got {low_hz}, {high_hz} at {sr} Hz")
    if len(x) < 2:
        return x.copy()
    sos = butter(order, [low_hz, high_hz], btype="bandpass", fs=sr, output="sos")
    padlen = min(3 * (2 * len(sos) + 1), len(x) - 1)
    return sosfiltfilt(sos, x.astype(np.float64), padlen=padlen).astype(np.float32)


# G.711 is implemented here on NumPy arrays: audioop (which had lin2ulaw / lin2alaw) is gone from Python 3.13, and
# no maintained library exposes G.711 coding of NumPy arrays (libsndfile has it only as a file subtype). The
# tables below follow the ITU-T G.711 segment layout exactly as in the classic reference code (Sun Microsystems'
# public-domain g711.c): μ-law on 14-bit magnitudes with bias 0x84, A-law on 13-bit magnitudes with even-bit
# inversion (0x55). Float samples are first rounded to 16-bit PCM (× 32768, clipped).
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


@functools.cache
def _g711_tables(law: str) -> tuple[np.ndarray, np.ndarray]:
    """(encode table over all 65536 int16 values → uint8 code, decode table 256 codes → int16 value)."""
    pcm = np.arange(-32768, 32768, dtype=np.int64)
    code = np.arange(256, dtype=np.int64)
    if law == "mulaw":
        p = pcm >> 2
        mask = np.where(p < 0, 0x7F, 0xFF)
        mag = np.minimum(np.abs(p), 8159) + 0x21
        seg = np.searchsorted(_SEG_UEND, mag, side="left")
        enc = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0xF)) ^ mask
        u = ~code & 0xFF
        t = (((u & 0xF) << 3) + 0x84) << ((u & 0x70) >> 4)
        dec = np.where(u & 0x80, 0x84 - t, t - 0x84)
    else:
        p = pcm >> 3
        mask = np.where(p >= 0, 0xD5, 0x55)
        mag = np.where(p >= 0, p, -p - 1)
        seg = np.searchsorted(_SEG_AEND, mag, side="left")
        quant = np.where(seg < 2, mag >> 1, mag >> np.maximum(seg, 1)) & 0xF
        enc = np.where(seg >= 8, 0x7F, (seg << 4) | quant) ^ mask
        a = code ^ 0x55
        aseg = (a & 0x70) >> 4
        t = (a & 0xF) << 4
        t = np.where(aseg == 0, t + 8, (t + 0x108) << np.maximum(aseg - 1, 0))
        dec = np.where(a & 0x80, t, -t)
    enc_u8, dec_i16 = enc.astype(np.uint8), dec.astype(np.int16)
    enc_u8.flags.writeable = False
    dec_i16.flags.writeable = False
    return enc_u8, dec_i16


def _to_pcm16_index(y: np.ndarray) -> np.ndarray:
    q = np.clip(np.round(_mono(y).astype(np.float64) * 32768.0), -32768, 32767).astype(np.int64)
    return q + 32768


def mulaw_encode(y: np.ndarray) -> np.ndarray:
    """G.711 μ-law codes (uint8, ``(n,)``) of ``y`` ``(n,)`` float32 in [-1, 1] (clipped beyond)."""
    return _g711_tables("mulaw")[0][_to_pcm16_index(y)]


def mulaw_decode(codes: np.ndarray) -> np.ndarray:
    """Float32 ``(n,)`` samples of G.711 μ-law ``codes`` (uint8, ``(n,)``); 255 distinct values, max ±0.980."""
    return (_g711_tables("mulaw")[1][np.asarray(codes, dtype=np.uint8)] / 32768.0).astype(np.float32)


def alaw_encode(y: np.ndarray) -> np.ndarray:
    """G.711 A-law codes (uint8, ``(n,)``) of ``y`` ``(n,)`` float32 in [-1, 1] (clipped beyond)."""
    return _g711_tables("alaw")[0][_to_pcm16_index(y)]


def alaw_decode(codes: np.ndarray) -> np.ndarray:
    """Float32 ``(n,)`` samples of G.711 A-law ``codes`` (uint8, ``(n,)``); 256 distinct values, max ±0.984."""
    return (_g711_tables("alaw")[1][np.asarray(codes, dtype=np.uint8)] / 32768.0).astype(np.float32)


def g711(y: np.ndarray, law: Literal["mulaw", "alaw"] = "mulaw") -> np.ndarray:
    """G.711 companding round trip (encode to 8-bit codes, decode) of ``y`` ``(n,)`` float32.

    Quantises to at most 256 levels, logarithmically spaced; the error is at most half a step: ≤ 1/16 of the
    magnitude plus 3e-4 (about 1/32 for A-law and for μ-law above a few % of full scale), ≤ 0.016 absolute.
    Samples beyond ±1 are clipped. Keeps length and dtype.
    """
    if law == "mulaw":
        return mulaw_decode(mulaw_encode(y))
    if law == "alaw":
        return alaw_decode(alaw_encode(y))
    raise ConfigError(f"unknown G.711 law {law!r}: use 'mulaw' or 'alaw'")


def telephone(
    y: np.ndarray,
    sr: int,
    law: Literal["mulaw", "alaw", "none"] = "mulaw",
    *,
    low_hz: float = 300.0,
    high_hz: float = 3400.0,
    narrowband_sr: int = 8000,
) -> np.ndarray:
    """A narrowband telephone channel: band-pass ``low_hz``..``high_hz`` Hz, down to ``narrowband_sr`` Hz, G.711
    ``law`` companding there (``"none"``: skip it), and back up to ``sr``.

    ``y``: ``(n,)`` float32 at ``sr`` Hz (``sr`` ≥ ``narrowband_sr``). Returns ``(n,)`` float32: length kept
    (resampling rounding is cropped or zero-padded at the end), energy below ``low_hz`` and above ``high_hz``
    removed, values within ±1 when companded. Resampling is soxr (VHQ).
    """
    x = _mono(y)
    sr = _check_sr(sr)
    if sr < narrowband_sr:
        raise ConfigError(f"telephone needs sr >= {narrowband_sr} Hz, got {sr}")
    if law not in ("mulaw", "alaw", "none"):
        raise ConfigError(f"unknown telephone law {law!r}: use mulaw, alaw or none")
    if len(x) == 0:
        return x.copy()
    nb = resample(bandpass(x, sr, low_hz, high_hz), sr, narrowband_sr)
    if law != "none":
        nb = g711(nb, law)
    return _fit_length(resample(nb, narrowband_sr, sr), len(x))


# ---- lossy codecs (libsndfile) -----------------------------------------------------------------------------

CODECS: dict[str, tuple[str, str]] = {
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
    "vorbis": ("OGG", "VORBIS"),
}
"""Codec name → (libsndfile format, subtype)."""

_CODEC_RATES: dict[str, tuple[int, ...]] = {
    "mp3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
    "opus": (8000, 12000, 16000, 24000, 48000),
}


def available_codecs() -> tuple[str, ...]:
    """The codecs of :data:`CODECS` that the installed libsndfile can write (via ``soundfile``)."""
    out = []
    for name, (fmt, subtype) in CODECS.items():
        try:
            ok = subtype in sf.available_subtypes(fmt)
        except Exception:  # an unknown format in an old libsndfile
            ok = False
        if ok:
            out.append(name)
    return tuple(out)


def codec_roundtrip(y: np.ndarray, sr: int, codec: str, compression_level: float = 0.9) -> np.ndarray:
    """Encode ``y`` ``(n,)`` float32 at ``sr`` Hz with a lossy ``codec`` (mp3, opus, vorbis) in memory and decode.

    ``compression_level`` is libsndfile's ``SFC_SET_COMPRESSION_LEVEL`` in [0, 1] (0 = best quality, 1 =
    smallest; MP3 needs < 1), using each encoder's default (variable) bitrate mode. Measured on 16 kHz
    RAVDESS speech with libsndfile 1.2.2: mp3 0.5 → ~21 kb/s, 0.9 → ~13 kb/s; opus 0.5 → ~114, 0.9 → ~18,
    1.0 → ~6.5 kb/s; vorbis 0.5 → ~31, 0.9 → ~22 kb/s. Opus takes 8/12/16/24/48 kHz and MP3 the MPEG rates;
    other rates are resampled to 48 kHz for the codec and back. The encoder sees the signal clipped to [-1, 1],
    as a PCM source would be. Returns ``(n,)`` float32: length kept (decoders here drop the encoder delay; any
    difference is cropped or zero-padded at the end). Deterministic. A codec the installed libsndfile lacks
    raises :class:`ConfigError`.
    """
    x = _mono(y)
    sr = _check_sr(sr)
    if codec not in CODECS:
        raise ConfigError(f"unknown codec {codec!r}: use one of {', '.join(CODECS)}")
    if codec not in available_codecs():
        fmt, subtype = CODECS[codec]
        raise ConfigError(
            f"codec {codec!r} ({fmt}/{subtype}) is not supported by the installed libsndfile "
            f"{sf.__libsndfile_version__}; available: {', '.join(available_codecs()) or 'none'}"
        )
    if not 0.0 <= compression_level <= 1.0 or (codec == "mp3" and compression_level >= 1.0):
        raise ConfigError(f"codec {codec}: compression level must be in [0, 1{')' if codec == 'mp3' else ']'}")
    if len(x) == 0:
        return x.copy()
    rates = _CODEC_RATES.get(codec)
    rate = sr if rates is None or sr in rates else 48_000
    fmt, subtype = CODECS[codec]
    buf = io.BytesIO()
    try:
        sf.write(
            buf,
            np.clip(resample(x, sr, rate), -1.0, 1.0),
            rate,
            format=fmt,
            subtype=subtype,
            compression_level=float(compression_level),
        )
        buf.seek(0)
        decoded, got_rate = sf.read(buf, dtype="float32", always_2d=False)
    except sf.LibsndfileError as exc:
        raise ConfigError(f"codec {codec} at compression level {compression_level}: libsndfile: {exc}") from exc
    return _fit_length(resample(np.asarray(decoded, dtype=np.float32), int(got_rate), sr), len(x))


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
    sr = _check_sr(sr)
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

    x = _mono(y)
    h = _mono(rir, "impulse response").astype(np.float64)
    if len(h) == 0 or not np.any(h):
        raise ConfigError("impulse response is empty or all zeros")
    if len(x) == 0:
        return x.copy()
    delay = int(np.argmax(np.abs(h)))
    wet = fftconvolve(x.astype(np.float64), h)[delay : delay + len(x)]
    p_wet = _power(wet)
    if p_wet == 0.0:
        return np.zeros_like(x)
    return (wet * math.sqrt(_power(x) / p_wet)).astype(np.float32)


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


# ---- additive noise ----------------------------------------------------------------------------------------


def white_noise(n: int, rng: RngLike) -> np.ndarray:
    """Gaussian white noise ``(n,)`` float32 with unit variance, drawn from ``rng``."""
    return _as_rng(rng).standard_normal(int(n)).astype(np.float32)


def pink_noise(n: int, rng: RngLike) -> np.ndarray:
    """Pink noise ``(n,)`` float32 (power spectrum ∝ 1/f, no DC) scaled to unit RMS, drawn from ``rng``."""
    n = int(n)
    w = _as_rng(rng).standard_normal(n)
    if n < 4:
        return w.astype(np.float32)
    spec = np.fft.rfft(w)
    f = np.fft.rfftfreq(n)
    spec[0] = 0.0
    spec[1:] /= np.sqrt(f[1:])
    out = np.fft.irfft(spec, n)
    return (out / math.sqrt(_power(out))).astype(np.float32)


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
    if not re.fullmatch(_NAME, name or ""):
        raise ConfigError(f"invalid noise name {name!r}")
    d = Path(folder)
    for ext in (".flac", ".wav", ".ogg"):
        path = d / f"{name}{ext}"
        if path.is_file():
            return _load_noise_cached(str(path.resolve()), _check_sr(sr))
    raise ConfigError(f"noise {name!r} not found in {d}; available: {', '.join(noise_names(d)) or 'none'}")


def mix_at_snr(y: np.ndarray, noise: np.ndarray, snr_db: float, rng: RngLike) -> np.ndarray:
    """``y`` plus ``noise`` scaled so that the SNR over the whole clip is exactly ``snr_db`` dB.

    ``y``: ``(n,)`` float32; ``noise``: ``(m,)`` float32, any length: a segment of ``n`` samples starting at an
    offset drawn from ``rng`` is used, wrapping around (looping) when ``m < n`` or the segment runs off the end.
    SNR = 10·log10(mean(y²) / mean(segment²)) over the same ``n`` samples. A silent ``y`` is returned unchanged
    (an SNR against silence is undefined); a silent noise segment raises :class:`ConfigError`. Returns ``(n,)``
    float32 (not clipped).
    """
    x = _mono(y)
    nz = _mono(noise, "noise")
    p_sig = _power(x)
    if p_sig == 0.0:  # also an empty clip
        return x.copy()
    if len(nz) == 0:
        raise ConfigError("noise is empty")
    offset = int(_as_rng(rng).integers(0, len(nz)))
    seg = np.take(nz, (offset + np.arange(len(x))) % len(nz)).astype(np.float64)
    p_noise = _power(seg)
    if p_noise == 0.0:
        raise ConfigError("noise segment is silent: cannot reach an SNR")
    scale = math.sqrt(p_sig / (p_noise * 10.0 ** (float(snr_db) / 10.0)))
    return (x.astype(np.float64) + scale * seg).astype(np.float32)


def _noise_array(name: str, n: int, sr: int, noises: NoiseSource, rng: np.random.Generator) -> np.ndarray:
    if name == "generated-white":
        return white_noise(n, rng)
    if name == "generated-pink":
        return pink_noise(n, rng)
    if isinstance(noises, Mapping):
        if name not in noises:
            raise ConfigError(f"noise {name!r} not among the given arrays ({', '.join(sorted(noises)) or 'none'})")
        return _mono(noises[name], f"noise {name!r}")
    if noises is None:
        raise ConfigError(f"noise {name!r} is a recording: pass noises=<folder> or a mapping of arrays")
    return load_noise(name, noises, sr)


# ---- specs -------------------------------------------------------------------------------------------------


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __str__(self) -> str:
        return self.token()

    def token(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


class Telephone(_Spec):
    """Telephone channel: 300–3400 Hz band, 8 kHz, G.711 ``law`` (see :func:`telephone`)."""

    kind: Literal["telephone"] = "telephone"
    law: Literal["mulaw", "alaw", "none"] = "mulaw"

    def token(self) -> str:
        return "telephone" if self.law == "mulaw" else f"telephone:{self.law}"


class Codec(_Spec):
    """Lossy codec round trip at libsndfile ``compression_level`` (see :func:`codec_roundtrip`)."""

    kind: Literal["codec"] = "codec"
    codec: Literal["mp3", "opus", "vorbis"]
    compression_level: float = Field(0.9, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _mp3_level(self) -> Codec:
        if self.codec == "mp3" and self.compression_level >= 1.0:
            raise ValueError("mp3 compression level must be < 1")
        return self

    def token(self) -> str:
        level = "" if self.compression_level == 0.9 else f"@{_num(self.compression_level)}"
        return f"codec:{self.codec}{level}"


class Reverb(_Spec):
    """Shoebox-room reverberation, Sabine ``rt60_s`` in the :data:`DEFAULT_ROOM_M` room (see :func:`reverberate`)."""

    kind: Literal["reverb"] = "reverb"
    rt60_s: float = Field(0.6, gt=0.0, le=3.0)
    position_seed: int = Field(0, ge=0)

    def token(self) -> str:
        if self.position_seed:
            return f"reverb:{_num(self.rt60_s)}@{self.position_seed}"
        return "reverb" if self.rt60_s == 0.6 else f"reverb:{_num(self.rt60_s)}"


class Noise(_Spec):
    """Additive noise ``noise`` (a recording's name or a generated noise) at ``snr_db`` dB (see :func:`mix_at_snr`)."""

    kind: Literal["noise"] = "noise"
    noise: str = Field(pattern=f"^{_NAME}$")
    snr_db: float = Field(ge=-30.0, le=60.0)

    def token(self) -> str:
        return f"noise:{self.noise}@{_num(self.snr_db)}"


class Gain(_Spec):
    """Level change of ``gain_db`` dB, optionally clipped at full scale (see :func:`gain`)."""

    kind: Literal["gain"] = "gain"
    gain_db: float = Field(ge=-120.0, le=60.0)
    clip: bool = False

    def token(self) -> str:
        return f"gain:{_num(self.gain_db)}{':clip' if self.clip else ''}"


Degradation = Annotated[Telephone | Codec | Reverb | Noise | Gain, Field(discriminator="kind")]
"""One degradation step: a :class:`Telephone`, :class:`Codec`, :class:`Reverb`, :class:`Noise` or :class:`Gain`."""

Chain = tuple[Degradation, ...]
"""Degradation steps applied left to right; the empty chain is ``clean``."""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Degradation)


def degradation_from_dict(data: Mapping[str, Any]) -> Degradation:
    """A spec from its ``model_dump()`` (``{"kind": "noise", "noise": "babble", "snr_db": 10}``); invalid →
    :class:`ConfigError`."""
    try:
        spec: Degradation = _ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"degradation {dict(data)!r}: {_first_error(exc)}") from None
    return spec


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))


# ---- grammar -----------------------------------------------------------------------------------------------

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_STEP_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        ("telephone", r"telephone(?::(?P<law>mulaw|alaw|none))?"),
        ("codec", rf"codec:(?P<codec>[a-z0-9]+)(?:@(?P<level>{_NUMBER}))?"),
        ("reverb", rf"reverb(?::(?P<rt60>{_NUMBER})(?:@(?P<seed>\d+))?)?"),
        ("noise", rf"noise:(?P<name>{_NAME})@(?P<snr>{_NUMBER})"),
        ("noise", rf"noise-(?P<snr>\d+)db:(?P<name>{_NAME})"),
        ("gain", rf"gain:(?P<db>{_NUMBER})(?P<clip>:clip)?"),
        ("level", r"level-(?P<db>\d+)db"),
    )
)


def _parse_step(step: str) -> Degradation:
    for kind, pattern in _STEP_PATTERNS:
        m = pattern.fullmatch(step)
        if m is None:
            continue
        g = m.groupdict()
        data: dict[str, Any]
        if kind == "telephone":
            data = {"kind": kind, "law": g["law"] or "mulaw"}
        elif kind == "codec":
            data = {"kind": kind, "codec": g["codec"], **({"compression_level": g["level"]} if g["level"] else {})}
        elif kind == "reverb":
            data = {"kind": kind, "rt60_s": g["rt60"] or 0.6, "position_seed": g["seed"] or 0}
        elif kind == "noise":
            data = {"kind": kind, "noise": g["name"], "snr_db": g["snr"]}
        elif kind == "gain":
            data = {"kind": kind, "gain_db": g["db"], "clip": bool(g["clip"])}
        else:
            data = {"kind": "gain", "gain_db": -float(g["db"])}
        try:
            spec: Degradation = _ADAPTER.validate_python(data)
        except ValidationError as exc:
            raise ConfigError(f"degradation step {step!r}: {_first_error(exc)}") from None
        return spec
    raise ConfigError(
        f"unknown degradation step {step!r}: expected telephone[:mulaw|alaw|none], codec:mp3|opus|vorbis[@LEVEL], "
        "reverb[:RT60[@SEED]], noise:NAME@SNR, noise-NdB:NAME, gain:DB[:clip] or level-NdB"
    )


def parse(text: str) -> Chain:
    """Parse a condition string (grammar in the module docstring) into a chain of specs.

    ``"clean"`` → ``()``; ``"telephone+noise:babble@10"`` → ``(Telephone(), Noise(noise="babble", snr_db=10))``.
    An empty string, an empty step, or a malformed or out-of-range step raises :class:`ConfigError` naming it.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("empty degradation condition: use 'clean' for none")
    steps = [s.strip() for s in re.split(r"\+(?![\d.])", text.strip())]
    if steps == ["clean"]:
        return ()
    if "clean" in steps:
        raise ConfigError(f"condition {text!r}: 'clean' must stand alone")
    if "" in steps:
        raise ConfigError(f"condition {text!r} has an empty step (a stray '+')")
    return tuple(_parse_step(s) for s in steps)


def format_chain(chain: Degradation | Sequence[Degradation]) -> str:
    """The canonical condition string of a spec or chain (``parse(format_chain(c)) == c``); ``()`` → ``"clean"``."""
    steps = [chain] if isinstance(chain, _Spec) else list(chain)
    return "+".join(s.token() for s in steps) or "clean"


# ---- apply -------------------------------------------------------------------------------------------------


def _as_chain(spec: Degradation | Sequence[Degradation] | str) -> Chain:
    if isinstance(spec, str):
        return parse(spec)
    if isinstance(spec, _Spec):
        return (spec,)
    chain = tuple(spec)
    for s in chain:
        if not isinstance(s, _Spec):
            raise ConfigError(f"not a degradation spec: {s!r}")
    return chain


def _apply_one(x: np.ndarray, sr: int, spec: Degradation, g: np.random.Generator, noises: NoiseSource) -> np.ndarray:
    if isinstance(spec, Telephone):
        return telephone(x, sr, spec.law)
    if isinstance(spec, Codec):
        return codec_roundtrip(x, sr, spec.codec, spec.compression_level)
    if isinstance(spec, Reverb):
        return reverberate(x, sr, spec.rt60_s, position_seed=spec.position_seed)
    if isinstance(spec, Noise):
        return mix_at_snr(x, _noise_array(spec.noise, len(x), sr, noises, g), spec.snr_db, g)
    return gain(x, spec.gain_db, clip=spec.clip)


def apply(
    y: np.ndarray,
    sr: int,
    spec: Degradation | Sequence[Degradation] | str,
    rng: RngLike,
    *,
    noises: NoiseSource = None,
) -> np.ndarray:
    """Degrade ``y`` ``(n,)`` float32 at ``sr`` Hz with a spec, a chain of specs, or a condition string.

    ``rng`` (a generator or an integer seed; ``None`` = fresh entropy, not reproducible) seeds the random parts
    (noise offsets, generated noise): each step gets its own child generator drawn in order, so the same input,
    spec and seed give identical output. ``noises`` is the noise folder, or a mapping name → ``(m,)`` float32
    array, for steps that name a recording. Returns ``(n,)`` float32, finite, same length; ``"clean"`` returns
    a copy.
    """
    x = _mono(y).copy()
    sr = _check_sr(sr)
    chain = _as_chain(spec)
    g = _as_rng(rng)
    for step in chain:
        child = np.random.default_rng(int(g.integers(0, 2**63 - 1)))
        x = _apply_one(x, sr, step, child, noises)
    return x


# ---- training draws ----------------------------------------------------------------------------------------

Range = tuple[float, float]


class TrainingDegradationConfig(BaseModel):
    """Probabilities and ranges of :func:`sample_training_degradation`. Ranges are ``(low, high)``, uniform."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p_reverb: float = Field(0.3, ge=0, le=1, description="probability of room reverb")
    rt60_s: Range = Field((0.3, 0.9), description="Sabine RT60 (s), rounded to rt60_step_s")
    rt60_step_s: float = Field(0.1, gt=0, description="RT60 grid (s): few distinct rooms, so the RIR cache hits")
    room_positions: int = Field(4, ge=1, description="source/mic placements drawn from (position seeds 0..n-1)")
    p_noise: float = Field(0.5, ge=0, le=1, description="probability of additive noise")
    snr_db: Range = Field((0.0, 20.0), description="SNR of the noise (dB)")
    p_gain: float = Field(0.3, ge=0, le=1, description="probability of a level change")
    gain_db: Range = Field((-20.0, 6.0), description="level change (dB)")
    gain_clip: bool = Field(True, description="clip at full scale after a level change")
    p_channel: float = Field(0.3, ge=0, le=1, description="probability of a telephone or codec channel")
    channels: tuple[str, ...] = Field(
        ("telephone", "telephone:alaw", "codec:mp3", "codec:opus", "codec:vorbis"),
        description="channel steps drawn from uniformly (condition-string syntax)",
    )
    codec_level: Range = Field((0.5, 0.95), description="libsndfile compression level of a codec channel")

    @model_validator(mode="after")
    def _check(self) -> TrainingDegradationConfig:
        for name in ("rt60_s", "snr_db", "gain_db", "codec_level"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: low {lo} > high {hi}")
        if self.rt60_s[0] <= 0 or not 0 <= self.codec_level[0] <= self.codec_level[1] < 1:
            raise ValueError("rt60_s must be positive and codec_level within [0, 1)")
        for ch in self.channels:
            try:
                chain = parse(ch)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            if len(chain) != 1 or not isinstance(chain[0], Telephone | Codec):
                raise ValueError(f"channel {ch!r} is not one telephone or codec step")
        if self.p_channel > 0 and not self.channels:
            raise ValueError("p_channel > 0 needs at least one channel")
        return self


def make_training_config(data: Mapping[str, Any] | None = None) -> TrainingDegradationConfig:
    """Build a :class:`TrainingDegradationConfig` from a mapping; invalid values raise :class:`ConfigError`."""
    try:
        return TrainingDegradationConfig(**dict(data or {}))
    except ValidationError as exc:
        raise ConfigError(f"training degradation config: {_first_error(exc)}") from None


def check_training_noises(noises: Iterable[str], *, allow_held_out: bool = False) -> tuple[str, ...]:
    """``noises`` as a tuple; raises :class:`~ser.errors.LeakageError` if one is in :data:`HELD_OUT_NOISES`
    (unless ``allow_held_out``)."""
    names = tuple(noises)
    bad = [n for n in names if n in HELD_OUT_NOISES]
    if bad and not allow_held_out:
        raise LeakageError(
            f"noise(s) {', '.join(bad)} are held out for testing (HELD_OUT_NOISES); train with "
            f"{', '.join(TRAIN_NOISES)} or pass allow_held_out=True"
        )
    return names


def sample_training_degradation(
    rng: RngLike,
    noises: Iterable[str] = TRAIN_NOISES,
    config: TrainingDegradationConfig | None = None,
    *,
    allow_held_out: bool = False,
) -> Chain:
    """Draw a random training chain: reverb → noise → level → channel, each step with its own probability.

    ``noises`` are the names the noise step picks from (uniformly); a held-out noise raises
    :class:`~ser.errors.LeakageError` unless ``allow_held_out``. Always consumes the same number of draws from
    ``rng``, so a seed gives the same chain. Apply the result with :func:`apply` (and a noise folder).
    """
    cfg = config or TrainingDegradationConfig()
    names = check_training_noises(noises, allow_held_out=allow_held_out)
    g = _as_rng(rng)
    chain: list[Degradation] = []

    use, rt60, pos = g.random() < cfg.p_reverb, g.uniform(*cfg.rt60_s), int(g.integers(0, cfg.room_positions))
    if use:
        rt60 = max(cfg.rt60_step_s, round(round(rt60 / cfg.rt60_step_s) * cfg.rt60_step_s, 6))
        chain.append(Reverb(rt60_s=rt60, position_seed=pos))
    use, snr, pick = g.random() < cfg.p_noise, g.uniform(*cfg.snr_db), g.random()
    if use and names:
        chain.append(Noise(noise=names[min(int(pick * len(names)), len(names) - 1)], snr_db=float(snr)))
    use, db = g.random() < cfg.p_gain, g.uniform(*cfg.gain_db)
    if use:
        chain.append(Gain(gain_db=float(db), clip=cfg.gain_clip))
    use, pick, level = g.random() < cfg.p_channel, g.random(), g.uniform(*cfg.codec_level)
    if use and cfg.channels:
        (step,) = parse(cfg.channels[min(int(pick * len(cfg.channels)), len(cfg.channels) - 1)])
        if isinstance(step, Codec):
            step = Codec(codec=step.codec, compression_level=float(level))
        chain.append(step)
    return tuple(chain)


__all__ = [
    "BENCHMARK_CONDITIONS",
    "CODECS",
    "DEFAULT_ROOM_M",
    "GENERATED_NOISES",
    "HELD_OUT_NOISES",
    "TRAIN_NOISES",
    "Chain",
    "Codec",
    "Degradation",
    "Gain",
    "Noise",
    "NoiseSource",
    "Reverb",
    "Telephone",
    "TrainingDegradationConfig",
    "alaw_decode",
    "alaw_encode",
    "apply",
    "available_codecs",
    "bandpass",
    "check_training_noises",
    "codec_roundtrip",
    "convolve_rir",
    "degradation_from_dict",
    "format_chain",
    "g711",
    "gain",
    "load_noise",
    "make_training_config",
    "mix_at_snr",
    "mulaw_decode",
    "mulaw_encode",
    "noise_names",
    "parse",
    "pink_noise",
    "reverberate",
    "room_impulse_response",
    "sample_training_degradation",
    "telephone",
    "white_noise",
]
