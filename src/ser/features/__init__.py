"""Acoustic features: frame-level descriptors, utterance functionals, and a content-addressed cache.

Layout (pure core first, I/O last):

- :mod:`ser.features.frames`: frame-level features as pure functions of a mono float32 signal;
  every one is a 2-D array ``(rows, T)`` on the same hop, so frame ``t`` of every kind covers the same audio.
- :mod:`ser.features.functionals`: one fixed-length vector per utterance (means, deviations, percentiles,
  ranges, slopes of the frame features), with a stable list of feature names.
- :mod:`ser.features.cache`: ``.npz`` files keyed by (audio sha256, hash of the parameters one kind depends on).
- :mod:`ser.features.extract`: parallel extraction over a manifest, through the cache.

This module holds the configuration, :class:`FeatureConfig`, and the registry of feature *kinds*. It imports no
heavy library, so reading or hashing a configuration is cheap.

Kinds
=====

============ ================ ======================================================================
kind         shape            meaning and unit
============ ================ ======================================================================
logmel       (n_mels, T)      log-mel power spectrogram, dB re unit power of the STFT (fixed reference)
mfcc         (3*n_mfcc, T)    MFCCs (DCT-II of ``logmel``), then their deltas, then delta-deltas
zcr          (1, T)           zero-crossing rate, crossings per sample in [0, 1]
rms          (1, T)           frame RMS level, dBFS (a full-scale square wave is 0 dB), floor -100 dB
chroma       (n_chroma, T)    chroma energy per pitch class (C, C#, ... B), each frame max-normalised
centroid     (1, T)           spectral centroid, Hz
contrast     (bands+1, T)     spectral contrast (peak - valley) per octave band, dB
f0           (3, T)           rows: F0 in Hz (NaN when unvoiced), voiced flag (0/1), voicing probability
vad          (1, T)           webrtcvad voice flag (0/1) of the frame's centre sample (:data:`VAD_TRIM`); read by
                              a model's ``trim: vad`` (:func:`ser.model_folder.frame_input`), never a model input
functionals  (D,)             utterance vector, names from :func:`ser.features.functionals.feature_names`
egemaps      (88,)            openSMILE eGeMAPSv02 functionals (optional ``opensmile`` package)
compare      (6373,)          openSMILE ComParE_2016 functionals (optional ``opensmile`` package)
============ ================ ======================================================================

``T = 1 + n_samples // hop_length`` for every frame kind (frames are centred: frame ``t`` is centred on
sample ``t * hop_length``). ``vad`` is a frame-aligned kind (:data:`TRIM_KINDS`) but not a feature: it is not in
:data:`FRAME_KINDS`, so no model reads it and no functional summarises it; it is extracted and cached like the
frame kinds when a model trims by voice activity.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ser import TARGET_SR
from ser.errors import ConfigError, validation_reason

FRAME_KINDS: tuple[str, ...] = ("logmel", "mfcc", "zcr", "rms", "chroma", "centroid", "contrast", "f0")
"""Frame-level kinds, each a ``(rows, T)`` float32 array."""

OPENSMILE_KINDS: tuple[str, ...] = ("egemaps", "compare")
"""Utterance-level kinds computed by the optional openSMILE package."""

TABLE_KINDS: tuple[str, ...] = ("functionals", *OPENSMILE_KINDS)
"""Utterance-level kinds: one vector per utterance, gathered into a table."""

VAD_KIND = "vad"
TRIM_KINDS: tuple[str, ...] = (VAD_KIND,)
"""Frame-aligned ``(1, T)`` kinds that decide a model's trim, not its input (see the module doc)."""

ALIGNED_KINDS: tuple[str, ...] = FRAME_KINDS + TRIM_KINDS
"""Every kind computed on the frame grid (``(rows, T)``): :data:`FRAME_KINDS` and :data:`TRIM_KINDS`."""

KINDS: tuple[str, ...] = FRAME_KINDS + TABLE_KINDS + TRIM_KINDS

VAD_TRIM: dict[str, Any] = {"aggressiveness": 2, "frame_ms": 10, "min_level_db": -50.0}
"""The :class:`ser.vad.VadConfig` fields of the ``vad`` kind (part of its cache key): webrtcvad mode 2 (the
service's) on 10 ms frames (one per feature frame), with the service's -50 dBFS energy gate, so digital silence
and faint hiss are never voiced. Chosen on the *training* noises (babble, pink, volvo_car at 10 and 0 dB) and
other actors than the ones reported (``benchmarks/trim_vad.py`` sweeps modes 0-3 on 10 / 30 ms frames through
the trim's own bounds, :func:`ser.model_folder.vad_bounds`): mode 2 on 10 ms frames kept the clean speech span
best (IoU 0.66, recall 83 %; the other settings 0.58-0.64), mode 3 keeps more noise."""

SCALAR_KINDS: tuple[str, ...] = ("zcr", "rms", "centroid", "f0")
"""Frame kinds whose functionals use ``scalar_stats`` (the rest use ``vector_stats``)."""

_STFT = ("sr", "n_fft", "win_length", "hop_length", "window")
_LOGMEL = (*_STFT, "n_mels", "fmin", "fmax", "amin")
KIND_PARAMS: dict[str, tuple[str, ...]] = {
    "logmel": _LOGMEL,
    "mfcc": (*_LOGMEL, "n_mfcc", "delta_width"),
    "zcr": ("sr", "win_length", "hop_length"),
    "rms": ("sr", "win_length", "hop_length"),
    "chroma": (*_STFT, "n_chroma"),
    "centroid": _STFT,
    "contrast": (*_STFT, "contrast_fmin", "contrast_bands"),
    "f0": ("sr", "hop_length", "f0_fmin", "f0_fmax", "f0_frame_length", "f0_resolution", "f0_thresholds"),
    "vad": ("sr", "hop_length"),
    "egemaps": ("sr",),
    "compare": ("sr",),
}
"""The :class:`FeatureConfig` fields each kind depends on (``functionals``: see :meth:`FeatureConfig.params_for`)."""

FUNCTIONAL_PARAMS: tuple[str, ...] = ("frame_kinds", "scalar_stats", "vector_stats")

KIND_VERSIONS: dict[str, int] = dict.fromkeys(KINDS, 1)
"""Bumped when the code computing a kind changes its numbers, so old cache entries are not reused."""

_STAT_RE = re.compile(r"^(mean|std|min|max|range|iqr|slope|p(\d{1,3}(?:\.\d+)?))$")


class FeatureConfig(BaseModel):
    """Every parameter of feature extraction. Frozen; :meth:`hash` is stable across runs and machines.

    Times are in samples at ``sr`` (25 ms window = 400, 10 ms hop = 160 at 16 kHz), frequencies in Hz.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sr: int = Field(TARGET_SR, ge=8000, description="sample rate (Hz) the audio is loaded at")
    n_fft: int = Field(512, ge=16, description="FFT size (samples); the window is zero-padded to it")
    win_length: int = Field(400, ge=16, description="analysis window (samples): 400 = 25 ms at 16 kHz")
    hop_length: int = Field(160, ge=1, description="hop between frames (samples): 160 = 10 ms at 16 kHz")
    window: str = Field("hann", description="window function name (scipy.signal.get_window)")
    n_mels: int = Field(64, ge=1, description="mel bands")
    fmin: float = Field(50.0, ge=0, description="lowest mel band edge (Hz)")
    fmax: float = Field(8000.0, gt=0, description="highest mel band edge (Hz), at most sr/2")
    amin: float = Field(1e-10, gt=0, description="power floor before dB (1e-10 → -100 dB)")
    n_mfcc: int = Field(20, ge=1, description="cepstral coefficients (then deltas, delta-deltas)")
    delta_width: int = Field(9, ge=3, description="frames in the delta regression window (odd)")
    n_chroma: int = Field(12, ge=1, description="chroma bins per octave")
    contrast_fmin: float = Field(100.0, gt=0, description="upper edge of the lowest contrast band (Hz)")
    contrast_bands: int = Field(6, ge=1, description="octave bands of spectral contrast (rows = bands + 1)")
    f0_fmin: float = Field(65.0, gt=0, description="lowest F0 searched (Hz)")
    f0_fmax: float = Field(600.0, gt=0, description="highest F0 searched (Hz)")
    f0_frame_length: int = Field(1024, ge=64, description="pYIN frame (samples); must hold 2 periods of f0_fmin")
    f0_resolution: float = Field(
        0.2, gt=0, lt=1, description="pYIN pitch grid in semitones (0.2 = 20 cents; librosa's default is 0.1)"
    )
    f0_thresholds: int = Field(20, ge=2, description="pYIN threshold count (librosa's default is 100)")
    frame_kinds: tuple[str, ...] = Field(FRAME_KINDS, description="frame kinds computed and summarised")
    scalar_stats: tuple[str, ...] = Field(
        ("mean", "std", "min", "max", "range", "p1", "p25", "p50", "p75", "p99", "slope"),
        description="functionals of one-row kinds (zcr, rms, centroid, F0, voicing probability)",
    )
    vector_stats: tuple[str, ...] = Field(
        ("mean", "std"), description="functionals of each row of multi-row kinds (logmel, mfcc, chroma, contrast)"
    )

    @field_validator("frame_kinds")
    @classmethod
    def _known_kinds(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [k for k in v if k not in FRAME_KINDS]
        if bad:
            raise ValueError(f"unknown frame kind(s) {bad}; choose from {list(FRAME_KINDS)}")
        if len(set(v)) != len(v):
            raise ValueError("frame kinds repeat")
        if not v:
            raise ValueError("at least one frame kind is needed")
        return v

    @field_validator("scalar_stats", "vector_stats")
    @classmethod
    def _known_stats(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for s in v:
            m = _STAT_RE.match(s)
            if not m:
                raise ValueError(f"unknown statistic {s!r}; use mean, std, min, max, range, iqr, slope or pNN")
            if m.group(2) is not None and not 0 <= float(m.group(2)) <= 100:
                raise ValueError(f"percentile out of [0, 100]: {s!r}")
        if len(set(v)) != len(v):
            raise ValueError("statistics repeat")
        if not v:
            raise ValueError("at least one statistic is needed")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> FeatureConfig:
        nyq = self.sr / 2
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} > n_fft {self.n_fft}")
        if not self.fmin < self.fmax <= nyq:
            raise ValueError(f"need fmin < fmax <= sr/2, got fmin={self.fmin}, fmax={self.fmax}, sr={self.sr}")
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc {self.n_mfcc} > n_mels {self.n_mels}")
        if self.delta_width % 2 == 0:
            raise ValueError(f"delta_width must be odd, got {self.delta_width}")
        if self.contrast_fmin * 2**self.contrast_bands >= nyq:
            raise ValueError(
                f"contrast_fmin * 2**contrast_bands = {self.contrast_fmin * 2**self.contrast_bands:g} Hz "
                f"must be below sr/2 = {nyq:g} Hz"
            )
        if not self.f0_fmin < self.f0_fmax <= nyq:
            raise ValueError(f"need f0_fmin < f0_fmax <= sr/2, got {self.f0_fmin}, {self.f0_fmax}")
        # pYIN needs two periods of f0_fmin in a frame (librosa warns otherwise).
        if self.sr / self.f0_fmin >= self.f0_frame_length // 2:
            raise ValueError(
                f"f0_frame_length {self.f0_frame_length} is too short for f0_fmin {self.f0_fmin} Hz "
                f"(needs > {2 * self.sr / self.f0_fmin:.0f} samples)"
            )
        return self

    # ---- hashing -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every parameter."""
        return self.model_dump(mode="json")

    def hash(self) -> str:
        """Stable 16-hex-digit hash of the whole configuration (sorted-key JSON)."""
        return _digest({"config": self.to_dict()})

    def params_for(self, kind: str) -> dict[str, Any]:
        """The parameters ``kind`` depends on (and only those), plus the code version of every kind involved."""
        full = self.to_dict()
        if kind == "functionals":
            names: set[str] = set(FUNCTIONAL_PARAMS)
            for k in self.frame_kinds:
                names.update(KIND_PARAMS[k])
            versions = {k: KIND_VERSIONS[k] for k in (*self.frame_kinds, "functionals")}
        elif kind in KIND_PARAMS:
            names = set(KIND_PARAMS[kind])
            versions = {kind: KIND_VERSIONS[kind]}
        else:
            raise ConfigError(f"unknown feature kind {kind!r}; choose from {', '.join(KINDS)}")
        out = {"kind": kind, "versions": versions, "params": {n: full[n] for n in sorted(names)}}
        if kind == VAD_KIND:  # the VAD settings are code constants, not FeatureConfig fields: key them too
            out["vad"] = dict(VAD_TRIM)
        return out

    def kind_hash(self, kind: str) -> str:
        """Hash of the parameters ``kind`` depends on: changing ``n_mfcc`` changes ``mfcc``'s, not ``logmel``'s."""
        spec = self.params_for(kind)
        spec["library"] = _library_version(kind)
        return _digest(spec)


def _library_version(kind: str) -> str:
    """Major.minor of the library computing ``kind`` (a new release may change the numbers)."""
    from importlib.metadata import PackageNotFoundError, version

    package = "opensmile" if kind in OPENSMILE_KINDS else "webrtcvad-wheels" if kind == VAD_KIND else "librosa"
    try:
        return f"{package}=={'.'.join(version(package).split('.')[:2])}"
    except PackageNotFoundError:
        return f"{package}==absent"


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def make_config(data: dict[str, Any] | None = None) -> FeatureConfig:
    """Build a :class:`FeatureConfig` from a mapping; invalid values raise :class:`ConfigError` (one line)."""
    try:
        return FeatureConfig(**(data or {}))
    except ValidationError as exc:
        raise ConfigError(f"feature config: {validation_reason(exc)}") from None
    except TypeError as exc:
        raise ConfigError(f"feature config: {exc}") from None


def load_config(path: str | Path | None) -> FeatureConfig:
    """Read a YAML (or JSON) feature configuration; ``None`` gives the defaults.

    The file holds :class:`FeatureConfig` fields at the top level, or under a ``features:`` key.
    """
    if path is None:
        return FeatureConfig()
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"feature config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"feature config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and set(data) == {"features"}:
        data = data["features"]
    if not isinstance(data, dict):
        raise ConfigError(f"feature config {path} must be a mapping of parameters")
    return make_config(data)


__all__ = [
    "ALIGNED_KINDS",
    "FRAME_KINDS",
    "KINDS",
    "KIND_PARAMS",
    "OPENSMILE_KINDS",
    "SCALAR_KINDS",
    "TABLE_KINDS",
    "TRIM_KINDS",
    "VAD_KIND",
    "VAD_TRIM",
    "FeatureConfig",
    "load_config",
    "make_config",
]
