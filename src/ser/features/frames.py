"""Frame-level features: pure functions of a mono float32 signal (librosa 0.11).

Every function returns a float32 array of shape ``(rows, T)`` with ``T = 1 + n_samples // hop_length``: frames
are centred (frame ``t`` is centred on sample ``t * hop_length``, the signal is zero-padded at both ends), and all
kinds share ``hop_length``, so column ``t`` of every kind describes the same 10 ms step. Defaults are the
:class:`~ser.features.FeatureConfig` defaults at 16 kHz: 25 ms Hann window (400 samples) zero-padded to a
512-point FFT, 10 ms hop (160 samples).

Units:

- ``logmel``: ``10·log10(max(P, amin))`` with ``P`` the mel-filtered power ``|STFT|²`` (Slaney-normalised mel
  filters, unnormalised STFT). The reference is fixed (1.0), not the clip's maximum, so values are comparable
  across clips: doubling the amplitude adds 6.02 dB everywhere, and digital silence sits at the floor
  (-100 dB with ``amin=1e-10``).
- ``mfcc``: DCT-II (orthonormal) of ``logmel``, in dB-cepstral units; deltas per frame.
- ``zcr``: fraction of adjacent sample pairs whose sign changes, in [0, 1].
- ``rms``: ``20·log10(max(rms, 1e-5))`` dBFS over a ``win_length`` frame (floor -100 dB).
- ``chroma``: STFT chroma (tuning fixed at 0 so it is not re-estimated per clip), each frame scaled to max 1.
- ``centroid``: magnitude-weighted mean frequency, Hz.
- ``contrast``: spectral contrast in dB per octave band (``contrast_bands`` bands above ``contrast_fmin``, plus
  the band below it).
- ``f0``: probabilistic YIN (``librosa.pyin``) on a coarse grid: full pYIN (10-cent grid, 100 thresholds) costs
  about 0.3 s per second of audio; the default 20-cent grid with 20 thresholds is ~6x faster and the error
  stays within ±10 cents (0.6 %). Rows: F0 in Hz (NaN where unvoiced), voiced flag (0/1), voicing
  probability in [0, 1]. ``librosa.yin`` would be faster still but gives no voicing decision.
- ``vad``: webrtcvad's voice flag (0.0 / 1.0) on the frame grid (:func:`voice`): not a feature, the input of a
  model's voice-activity trim.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from typing import Any, TypedDict

import librosa
import numpy as np

from ser import TARGET_SR
from ser.errors import AudioError, ConfigError, SerError
from ser.features import ALIGNED_KINDS, FRAME_KINDS, VAD_KIND, VAD_TRIM, FeatureConfig

_PITCH_CLASSES = ("C", "Cs", "D", "Ds", "E", "F", "Fs", "G", "Gs", "A", "As", "B")
_SPECTRAL = ("logmel", "mfcc", "chroma", "centroid", "contrast")


class _StftArgs(TypedDict):
    """The STFT keywords shared by :func:`spectrogram` and the spectral kinds."""

    n_fft: int
    win_length: int
    hop_length: int
    window: str


def n_frames(n_samples: int, hop_length: int = 160) -> int:
    """Number of centred frames for ``n_samples``: ``1 + n_samples // hop_length``."""
    return 1 + int(n_samples) // int(hop_length)


def check_signal(y: np.ndarray, min_samples: int = 1) -> np.ndarray:
    """Return ``y`` as a contiguous 1-D float32 array; raise :class:`AudioError` if unusable."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise AudioError(f"features need a mono 1-D signal, got shape {y.shape}")
    if y.size < min_samples:
        raise AudioError(f"signal too short for features: {y.size} samples < {min_samples} (one window)")
    if not np.all(np.isfinite(y)):
        raise AudioError("non-finite samples (NaN or Inf)")
    return np.ascontiguousarray(y, dtype=np.float32)


def spectrogram(
    y: np.ndarray, *, n_fft: int = 512, win_length: int = 400, hop_length: int = 160, window: str = "hann"
) -> np.ndarray:
    """STFT magnitude ``|X|``, shape ``(1 + n_fft // 2, T)``, linear amplitude (unnormalised)."""
    with warnings.catch_warnings():
        # A clip shorter than n_fft is zero-padded (center=True), which is what we want; librosa warns anyway.
        warnings.filterwarnings("ignore", message="n_fft=.*too large", category=UserWarning)
        stft = librosa.stft(
            check_signal(y),
            n_fft=n_fft,
            hop_length=hop_length,
            win_length=win_length,
            window=window,
            center=True,
            pad_mode="constant",
        )
    return np.abs(stft).astype(np.float32)


@functools.lru_cache(maxsize=32)
def mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa's (Slaney) mel filterbank ``(n_mels, 1 + n_fft // 2)``, built once per parameter set (read-only)."""
    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    basis.setflags(write=False)
    return basis


def logmel(
    y: np.ndarray | None = None,
    sr: int = TARGET_SR,
    *,
    S: np.ndarray | None = None,
    n_fft: int = 512,
    win_length: int = 400,
    hop_length: int = 160,
    window: str = "hann",
    n_mels: int = 64,
    fmin: float = 50.0,
    fmax: float = 8000.0,
    amin: float = 1e-10,
) -> np.ndarray:
    """Log-mel power spectrogram, ``(n_mels, T)``, dB re unit power (fixed reference; see module doc).

    ``S`` (an STFT magnitude from :func:`spectrogram`) may be given to avoid recomputing it.
    """
    if S is None:
        S = spectrogram(_need(y), n_fft=n_fft, win_length=win_length, hop_length=hop_length, window=window)
    # librosa.feature.melspectrogram(S=S**2, ...) is this einsum over librosa.filters.mel, which it rebuilds on every
    # call (a fifth of a 2 s window's features, the stream partials' hot path): the same product, basis cached.
    mel = np.einsum("...ft,mf->...mt", S**2, mel_basis(sr, n_fft, n_mels, fmin, fmax), optimize=True)
    return librosa.power_to_db(mel, ref=1.0, amin=amin, top_db=None).astype(np.float32)


def mfcc(
    y: np.ndarray | None = None,
    sr: int = TARGET_SR,
    *,
    logmel_db: np.ndarray | None = None,
    n_mfcc: int = 20,
    delta_width: int = 9,
    **logmel_kwargs,
) -> np.ndarray:
    """MFCCs with deltas and delta-deltas, ``(3 * n_mfcc, T)``: rows ``[c_0..c_{n-1}, Δc, ΔΔc]``.

    ``logmel_db`` (from :func:`logmel`) may be given; otherwise it is computed from ``y`` with ``logmel_kwargs``.
    Deltas use a ``delta_width``-frame regression window, narrowed (to the largest odd width ≤ T) on clips
    shorter than it; with fewer than 3 frames the deltas are 0.
    """
    if logmel_db is None:
        logmel_db = logmel(_need(y), sr, **logmel_kwargs)
    c = librosa.feature.mfcc(S=logmel_db, n_mfcc=n_mfcc, dct_type=2, norm="ortho").astype(np.float32)
    t = c.shape[1]
    width = min(delta_width, t if t % 2 else t - 1)
    if width >= 3:
        d1 = librosa.feature.delta(c, width=width, order=1, mode="interp")
        d2 = librosa.feature.delta(c, width=width, order=2, mode="interp")
    else:
        d1 = d2 = np.zeros_like(c)
    return np.concatenate([c, d1, d2], axis=0).astype(np.float32)


def zcr(y: np.ndarray, *, frame_length: int = 400, hop_length: int = 160) -> np.ndarray:
    """Zero-crossing rate, ``(1, T)``, crossings per sample in [0, 1]."""
    out = librosa.feature.zero_crossing_rate(
        check_signal(y), frame_length=frame_length, hop_length=hop_length, center=True
    )
    return out.astype(np.float32)


def rms_db(y: np.ndarray, *, frame_length: int = 400, hop_length: int = 160, floor_db: float = -100.0) -> np.ndarray:
    """Frame RMS level, ``(1, T)``, dBFS (``20·log10 rms``; a full-scale sine is -3 dB), floored at ``floor_db``."""
    rms = librosa.feature.rms(
        y=check_signal(y), frame_length=frame_length, hop_length=hop_length, center=True, pad_mode="constant"
    )
    return (20.0 * np.log10(np.maximum(rms, 10.0 ** (floor_db / 20.0)))).astype(np.float32)


def chroma(
    y: np.ndarray | None = None,
    sr: int = TARGET_SR,
    *,
    S: np.ndarray | None = None,
    n_fft: int = 512,
    win_length: int = 400,
    hop_length: int = 160,
    window: str = "hann",
    n_chroma: int = 12,
) -> np.ndarray:
    """STFT chroma, ``(n_chroma, T)``, each frame normalised to max 1 (silent frames stay 0)."""
    if S is None:
        S = spectrogram(_need(y), n_fft=n_fft, win_length=win_length, hop_length=hop_length, window=window)
    out = librosa.feature.chroma_stft(S=S**2, sr=sr, n_fft=n_fft, tuning=0.0, n_chroma=n_chroma)
    return out.astype(np.float32)


def centroid(
    y: np.ndarray | None = None,
    sr: int = TARGET_SR,
    *,
    S: np.ndarray | None = None,
    n_fft: int = 512,
    win_length: int = 400,
    hop_length: int = 160,
    window: str = "hann",
) -> np.ndarray:
    """Spectral centroid, ``(1, T)``, Hz (0 for silent frames)."""
    if S is None:
        S = spectrogram(_need(y), n_fft=n_fft, win_length=win_length, hop_length=hop_length, window=window)
    return librosa.feature.spectral_centroid(S=S, sr=sr, n_fft=n_fft).astype(np.float32)


def contrast(
    y: np.ndarray | None = None,
    sr: int = TARGET_SR,
    *,
    S: np.ndarray | None = None,
    n_fft: int = 512,
    win_length: int = 400,
    hop_length: int = 160,
    window: str = "hann",
    fmin: float = 100.0,
    n_bands: int = 6,
) -> np.ndarray:
    """Spectral contrast, ``(n_bands + 1, T)``, dB (peak minus valley energy per octave band)."""
    if S is None:
        S = spectrogram(_need(y), n_fft=n_fft, win_length=win_length, hop_length=hop_length, window=window)
    out = librosa.feature.spectral_contrast(S=S, sr=sr, n_fft=n_fft, fmin=fmin, n_bands=n_bands)
    return out.astype(np.float32)


def f0(
    y: np.ndarray,
    sr: int = TARGET_SR,
    *,
    fmin: float = 65.0,
    fmax: float = 600.0,
    frame_length: int = 1024,
    hop_length: int = 160,
    resolution: float = 0.2,
    n_thresholds: int = 20,
) -> np.ndarray:
    """Fundamental frequency by pYIN on a coarse grid, ``(3, T)``.

    Rows: ``0`` F0 in Hz, NaN where unvoiced; ``1`` voiced flag (1.0 / 0.0); ``2`` voicing probability [0, 1].
    ``resolution`` is the pitch grid step in semitones, ``n_thresholds`` the number of YIN thresholds pYIN
    marginalises over (librosa's defaults 0.1 and 100 are ~6x slower for a 0.5 % gain in precision).
    """
    y = check_signal(y)
    with warnings.catch_warnings():
        # A silent clip makes pYIN divide 0 by 0 in its normalisation; the result is simply "unvoiced".
        warnings.simplefilter("ignore", RuntimeWarning)
        hz, voiced, prob = librosa.pyin(
            y,
            fmin=fmin,
            fmax=fmax,
            sr=sr,
            frame_length=frame_length,
            hop_length=hop_length,
            resolution=resolution,
            n_thresholds=n_thresholds,
            center=True,
            pad_mode="constant",
        )
    hz = np.where(voiced, hz, np.nan)
    prob = np.nan_to_num(prob, nan=0.0)
    return np.stack([hz, voiced.astype(np.float32), prob]).astype(np.float32)


def voice(
    y: np.ndarray, sr: int = TARGET_SR, *, hop_length: int = 160, vad: Mapping[str, Any] | None = None
) -> np.ndarray:
    """Voice flag of each centred frame, ``(1, T)`` float32 0.0 / 1.0 (``T = 1 + n_samples // hop_length``).

    :func:`ser.vad.vad_flags` with :data:`~ser.features.VAD_TRIM` (``vad``: other
    :class:`~ser.vad.VadConfig` fields, for a benchmark's sweep; the ``vad`` kind always uses the constant) decides
    non-overlapping VAD frames from sample 0; frame ``t`` (centred on sample ``t * hop_length``) takes the flag of
    the VAD frame holding that sample; the centres past the last whole VAD frame take its flag. A clip shorter
    than one VAD frame is all 0.
    """
    from ser.vad import VadConfig, vad_flags

    y = check_signal(y)
    vcfg = VadConfig(**(VAD_TRIM if vad is None else vad))
    flags = vad_flags(y, sr, vcfg)
    T = n_frames(y.size, hop_length)
    out = np.zeros((1, T), dtype=np.float32)
    if flags.size:
        frame_len = sr * vcfg.frame_ms // 1000
        idx = np.minimum(np.arange(T) * hop_length // frame_len, flags.size - 1)
        out[0] = flags[idx]
    return out


def row_names(kind: str, cfg: FeatureConfig | None = None) -> list[str]:
    """Names of the rows of frame kind ``kind`` (``""`` for one-row kinds)."""
    cfg = cfg or FeatureConfig()
    if kind == "logmel":
        return [f"m{i:02d}" for i in range(cfg.n_mels)]
    if kind == "mfcc":
        base = [f"c{i:02d}" for i in range(cfg.n_mfcc)]
        return base + [f"d_{b}" for b in base] + [f"dd_{b}" for b in base]
    if kind in ("zcr", "rms", "centroid"):
        return [""]
    if kind == "chroma":
        return list(_PITCH_CLASSES) if cfg.n_chroma == 12 else [f"b{i:02d}" for i in range(cfg.n_chroma)]
    if kind == "contrast":
        return [f"b{i}" for i in range(cfg.contrast_bands + 1)]
    if kind == "f0":
        return ["hz", "voiced", "prob"]
    if kind == VAD_KIND:
        return [""]
    raise ConfigError(f"unknown frame kind {kind!r}; choose from {', '.join(FRAME_KINDS)}")


def one_blas_thread() -> Any:
    """A context in which BLAS (numpy's OpenBLAS) runs on one thread, so a clip's features are the same bits wherever
    they are computed: the mel projection is a BLAS product whose rounding depends on how many threads split it (up
    to 4e-6 dB apart between 1 and 2 threads), and a Ray or loky worker runs one thread while this process may run
    several. :func:`compute` runs in it, so extraction, training variants and serving build the same bits; extraction
    parallelises over files, not within one, so nothing is lost. About 10 µs per entry: the thread pools are looked
    up once per process (:func:`_blas_controller`).

    A limit on OpenBLAS is process-wide, not per thread: in a process that computes features on several threads at
    once, one thread leaving the context restores the pool while another is still inside. The servers therefore set
    one BLAS thread for the whole process at start (:func:`ser.serve.app.one_blas_thread_per_request`), and entering
    this context there changes nothing."""
    return _blas_controller().limit(limits=1, user_api="blas")


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    """The process's thread pools (threadpoolctl, which comes with scikit-learn), looked up once: a lookup costs
    about 2 ms, too much for every clip served."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def compute(
    y: np.ndarray,
    cfg: FeatureConfig | None = None,
    kinds: tuple[str, ...] | None = None,
    *,
    S: np.ndarray | None = None,
) -> dict:
    """Compute frame kinds (default ``cfg.frame_kinds``) of signal ``y`` (mono, ``cfg.sr`` Hz).

    Returns ``{kind: float32 array (rows, T)}`` with the same ``T`` for every kind. The STFT is computed once
    and shared; ``S``, the STFT magnitude of ``y`` as :func:`spectrogram` gives it ``(1 + n_fft // 2, T)``, may be
    passed instead (a stream's :class:`~ser.features.streaming.WindowSpectrogram`). Raises :class:`AudioError` if
    ``y`` is shorter than one window or holds NaN/Inf.
    """
    cfg = cfg or FeatureConfig()
    kinds = tuple(cfg.frame_kinds if kinds is None else kinds)
    for k in kinds:
        if k not in ALIGNED_KINDS:
            raise ConfigError(f"unknown frame kind {k!r}; choose from {', '.join(ALIGNED_KINDS)}")
    y = check_signal(y, min_samples=cfg.win_length)
    with one_blas_thread():  # the same bits in any process, whatever its BLAS thread count
        return _compute(y, cfg, kinds, S)


def _compute(y: np.ndarray, cfg: FeatureConfig, kinds: tuple[str, ...], S: np.ndarray | None) -> dict:
    """:func:`compute` on a checked signal and known kinds."""
    stft = _StftArgs(n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length, window=cfg.window)
    if S is not None:
        if S.shape != (1 + cfg.n_fft // 2, n_frames(y.size, cfg.hop_length)):
            raise SerError(f"spectrogram of shape {S.shape} does not match a signal of {y.size} samples")
    elif any(k in _SPECTRAL for k in kinds):
        S = spectrogram(y, **stft)
    out: dict[str, np.ndarray] = {}
    lm = None
    if "logmel" in kinds or "mfcc" in kinds:
        lm = logmel(sr=cfg.sr, S=S, **stft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax, amin=cfg.amin)
    for kind in kinds:
        if kind == "logmel":
            assert lm is not None  # computed above whenever "logmel" is among the kinds
            out[kind] = lm
        elif kind == "mfcc":
            out[kind] = mfcc(logmel_db=lm, n_mfcc=cfg.n_mfcc, delta_width=cfg.delta_width)
        elif kind == "zcr":
            out[kind] = zcr(y, frame_length=cfg.win_length, hop_length=cfg.hop_length)
        elif kind == "rms":
            out[kind] = rms_db(y, frame_length=cfg.win_length, hop_length=cfg.hop_length)
        elif kind == "chroma":
            out[kind] = chroma(sr=cfg.sr, S=S, **stft, n_chroma=cfg.n_chroma)
        elif kind == "centroid":
            out[kind] = centroid(sr=cfg.sr, S=S, **stft)
        elif kind == "contrast":
            out[kind] = contrast(sr=cfg.sr, S=S, **stft, fmin=cfg.contrast_fmin, n_bands=cfg.contrast_bands)
        elif kind == "f0":
            out[kind] = f0(
                y,
                cfg.sr,
                fmin=cfg.f0_fmin,
                fmax=cfg.f0_fmax,
                frame_length=cfg.f0_frame_length,
                hop_length=cfg.hop_length,
                resolution=cfg.f0_resolution,
                n_thresholds=cfg.f0_thresholds,
            )
        elif kind == VAD_KIND:
            out[kind] = voice(y, cfg.sr, hop_length=cfg.hop_length)
    expected = n_frames(y.size, cfg.hop_length)
    for kind, arr in out.items():
        if arr.ndim != 2 or arr.shape[1] != expected:  # a librosa change would break alignment: fail loudly
            raise SerError(f"{kind}: got shape {arr.shape}, expected (rows, {expected})")
    return out


def _need(y: np.ndarray | None) -> np.ndarray:
    if y is None:
        raise ValueError("give either the signal y or a precomputed spectrogram")
    return y
