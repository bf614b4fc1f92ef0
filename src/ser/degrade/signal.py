"""Level, telephone band with G.711, and lossy codecs of :mod:`ser.degrade`: pure functions of arrays."""

from __future__ import annotations

import functools
import io
from typing import Literal

import numpy as np
import soundfile as sf

from ser.audio import resample
from ser.degrade._base import check_sr, fit_length, mono
from ser.errors import ConfigError

# ---- level -------------------------------------------------------------------------------------------------


def gain(y: np.ndarray, gain_db: float, *, clip: bool = False) -> np.ndarray:
    """Scale ``y`` ``(n,)`` float32 by ``gain_db`` dB (amplitude factor ``10**(gain_db/20)``).

    With ``clip`` the result is clipped to full scale [-1, 1] (a saturating recorder). Keeps length and dtype.
    """
    x = mono(y)
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

    x = mono(y)
    sr = check_sr(sr)
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
    q = np.clip(np.round(mono(y).astype(np.float64) * 32768.0), -32768, 32767).astype(np.int64)
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
    x = mono(y)
    sr = check_sr(sr)
    if sr < narrowband_sr:
        raise ConfigError(f"telephone needs sr >= {narrowband_sr} Hz, got {sr}")
    if law not in ("mulaw", "alaw", "none"):
        raise ConfigError(f"unknown telephone law {law!r}: use mulaw, alaw or none")
    if len(x) == 0:
        return x.copy()
    nb = resample(bandpass(x, sr, low_hz, high_hz), sr, narrowband_sr)
    if law != "none":
        nb = g711(nb, law)
    return fit_length(resample(nb, narrowband_sr, sr), len(x))


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
    x = mono(y)
    sr = check_sr(sr)
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
    return fit_length(resample(np.asarray(decoded, dtype=np.float32), int(got_rate), sr), len(x))
