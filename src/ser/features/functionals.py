"""Utterance-level functionals: one fixed-length vector per utterance from its frame features.

For each frame kind in ``cfg.frame_kinds`` (in that order):

- one-row kinds (``zcr``, ``rms``, ``centroid``) get ``cfg.scalar_stats``, named ``<kind>_<stat>``;
- multi-row kinds (``logmel``, ``mfcc``, ``chroma``, ``contrast``) get ``cfg.vector_stats`` per row, named
  ``<kind>_<row>_<stat>`` (rows from :func:`ser.features.frames.row_names`), row by row;
- ``f0`` gives ``f0_<stat>`` over voiced frames only (Hz), ``voicing_prob_<stat>`` over all frames, and
  ``voiced_fraction`` (share of voiced frames). A clip with no voiced frame gets 0 for every ``f0_`` value,
  which ``voiced_fraction == 0`` tells apart.

Statistics (all along time, in the unit of the frame feature): ``mean``, ``std`` (population), ``min``,
``max``, ``range`` (max - min), ``pNN`` (NN-th percentile, linear interpolation), ``iqr`` (p75 - p25) and
``slope`` (least-squares linear-regression slope against time, unit per second; 0 with fewer than two frames).

With the default configuration the vector has 342 values: logmel 64x2, MFCC 60x2, chroma 12x2, contrast 7x2,
and 11 statistics of each of zcr, rms, centroid, F0 and voicing probability, plus the voiced fraction.
"""

from __future__ import annotations

import numpy as np

from ser.errors import AudioError, ConfigError
from ser.features import SCALAR_KINDS, FeatureConfig
from ser.features.frames import row_names


def stat_values(x: np.ndarray, times: np.ndarray, stats: tuple[str, ...]) -> np.ndarray:
    """Statistics of each row of ``x`` ``(rows, n)`` over its ``n`` frames at ``times`` (s) → ``(rows, len(stats))``.

    With ``n == 0`` every statistic is 0.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    rows, n = x.shape
    out = np.zeros((rows, len(stats)), dtype=np.float64)
    if n == 0:
        return out
    cache: dict[float, np.ndarray] = {}

    def pct(q: float) -> np.ndarray:
        if q not in cache:
            cache[q] = np.percentile(x, q, axis=1)
        return cache[q]

    for j, s in enumerate(stats):
        if s == "mean":
            out[:, j] = x.mean(axis=1)
        elif s == "std":
            out[:, j] = x.std(axis=1)
        elif s == "min":
            out[:, j] = x.min(axis=1)
        elif s == "max":
            out[:, j] = x.max(axis=1)
        elif s == "range":
            out[:, j] = x.max(axis=1) - x.min(axis=1)
        elif s == "iqr":
            out[:, j] = pct(75.0) - pct(25.0)
        elif s == "slope":
            out[:, j] = _slope(x, np.asarray(times, dtype=np.float64))
        elif s.startswith("p"):
            out[:, j] = pct(float(s[1:]))
        else:
            raise ConfigError(f"unknown statistic {s!r}")
    return out


def _slope(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of ``x`` against ``t`` (0 when ``t`` does not vary)."""
    tc = t - t.mean()
    denom = float(tc @ tc)
    if x.shape[1] < 2 or denom == 0.0:
        return np.zeros(x.shape[0])
    return (x - x.mean(axis=1, keepdims=True)) @ tc / denom


def _blocks(cfg: FeatureConfig) -> list[tuple[str, str, list[str], tuple[str, ...]]]:
    """The vector's layout: ``(kind, part, prefixes, stats)`` per block, in order."""
    blocks = []
    for kind in cfg.frame_kinds:
        if kind == "f0":
            blocks.append((kind, "f0", ["f0"], cfg.scalar_stats))
            blocks.append((kind, "prob", ["voicing_prob"], cfg.scalar_stats))
            blocks.append((kind, "fraction", ["voiced"], ("fraction",)))
        elif kind in SCALAR_KINDS:
            blocks.append((kind, "row", [kind], cfg.scalar_stats))
        else:
            blocks.append((kind, "rows", [f"{kind}_{r}" for r in row_names(kind, cfg)], cfg.vector_stats))
    return blocks


def feature_names(cfg: FeatureConfig | None = None) -> list[str]:
    """The names of the functionals vector for ``cfg``, in order (stable: depends only on ``cfg``)."""
    cfg = cfg or FeatureConfig()
    return [f"{p}_{s}" for _, _, prefixes, stats in _blocks(cfg) for p in prefixes for s in stats]


def functionals(frame_feats: dict[str, np.ndarray], cfg: FeatureConfig | None = None) -> tuple[np.ndarray, list]:
    """Summarise frame features (``{kind: (rows, T)}``, from :func:`ser.features.frames.compute`).

    Returns ``(vector, names)``: a float32 ``(D,)`` vector and its ``D`` names (:func:`feature_names`).
    Raises :class:`ConfigError` if a kind of ``cfg.frame_kinds`` is missing and :class:`AudioError` if a value
    is not finite.
    """
    cfg = cfg or FeatureConfig()
    parts: list[np.ndarray] = []
    for kind, part, _prefixes, stats in _blocks(cfg):
        if kind not in frame_feats:
            raise ConfigError(f"functionals need frame kind {kind!r}, which was not computed")
        arr = np.asarray(frame_feats[kind])
        times = np.arange(arr.shape[1]) * (cfg.hop_length / cfg.sr)
        if part == "f0":
            voiced = (arr[1] > 0.5) & np.isfinite(arr[0])
            parts.append(stat_values(arr[0, voiced], times[voiced], stats).ravel())
        elif part == "prob":
            parts.append(stat_values(arr[2], times, stats).ravel())
        elif part == "fraction":
            voiced = (arr[1] > 0.5) & np.isfinite(arr[0])
            parts.append(np.array([voiced.mean() if voiced.size else 0.0]))
        else:
            parts.append(stat_values(arr, times, stats).ravel())
    vector = np.concatenate(parts).astype(np.float32)
    names = feature_names(cfg)
    if vector.shape != (len(names),):  # a layout bug, not bad input
        raise ConfigError(f"functionals: {vector.size} values for {len(names)} names")
    if not np.all(np.isfinite(vector)):
        bad = names[int(np.flatnonzero(~np.isfinite(vector))[0])]
        raise AudioError(f"non-finite functional {bad!r}")
    return vector, names
