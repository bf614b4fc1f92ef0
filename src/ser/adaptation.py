"""Unsupervised target-domain adaptation of a model's input: per-row statistics matching.

A deployment records through another microphone, room or codec than the training corpus, which shifts and scales
the log-mel rows the model reads. Given unlabelled audio of the deployment (the *target* domain), each log-mel row
``r`` of the model input is mapped onto the training (*source*) statistics before the ONNX graph::

    x'[r, t] = (x[r, t] - mu_t[r]) / sd_t[r] * sd_s[r] + mu_s[r]

the classic feature-level standardisation of cross-corpus emotion recognition (Schuller et al., 2010), here
mapped back into the source domain so the trained graph is untouched. No label is used.

Statistics (:class:`RowStats`): every clip counts equally. A clip contributes the mean and standard deviation over
time of each row of *its model input* (after the silence trim, exactly what serving feeds the graph; the same
per-clip ``mel_mean`` / ``mel_std`` the monitoring reference stores, :mod:`ser.monitor.reference`); the pooled
mean is the mean of the clip means and the pooled variance that of the equal-weight mixture of the clips'
frames: ``mean(sd_i² + mu_i²) - mu²`` (:func:`pooled_stats`). The source side is therefore read from a model
folder's ``reference.parquet`` without a second copy; the target side is estimated by ``ser model adapt``
(:class:`ser.jobs.adapt.AdaptJob`).

Storage: :data:`ADAPTATION_FILE` (``adaptation.json``, format :data:`ADAPTATION_FORMAT`) in the model folder holds
both sides and the rows they cover; ``metadata.json["adaptation"]`` says where it came from and switches it on
(:func:`read_adaptation`). A folder without the entry is served exactly as exported.

Pure functions of arrays; units: dB (the log-mel rows), shapes noted per function.

Caveat: a model that standardises each clip's rows itself (``input_norm="utterance"``, the ``cnn``, ``crnn`` and
``rnn`` recipes) is invariant to a per-row affine map of its input (up to rounding), so this adaptation cannot
change its answers; it acts on models with a batch-norm or no input normalisation (e.g. ``tdnn``). For those
models ``ser model adapt`` re-estimates the network's own batch-norm statistics instead (AdaBN, :mod:`ser.adabn`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ser.errors import SerError

ADAPTATION_FILE = "adaptation.json"
ADAPTATION_FORMAT = "ser-adaptation/1"
METHOD = "row-statistics"
BATCHNORM_METHOD = "batchnorm"
"""The other method ``ser model adapt`` writes: AdaBN inside the graph (:mod:`ser.adabn`)."""
MIN_STD = 1e-3
"""Floor (dB) of a target row's standard deviation: a constant row would otherwise divide by zero."""


@dataclass(frozen=True)
class RowStats:
    """Pooled per-row statistics of a domain: ``mean`` and ``std`` float64 ``(rows,)`` in the input's unit (dB for
    log-mel), from ``clips`` clips (:func:`pooled_stats`)."""

    mean: np.ndarray
    std: np.ndarray
    clips: int

    def to_dict(self) -> dict[str, Any]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std], "clips": int(self.clips)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RowStats:
        try:
            mean = np.asarray(d["mean"], dtype=np.float64)
            std = np.asarray(d["std"], dtype=np.float64)
            clips = int(d.get("clips", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise SerError(f"{ADAPTATION_FILE}: statistics need 'mean' and 'std' lists ({exc})") from None
        if mean.ndim != 1 or mean.shape != std.shape or mean.size == 0:
            raise SerError(
                f"{ADAPTATION_FILE}: mean and std must be equal-length vectors, got {mean.shape} {std.shape}"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise SerError(f"{ADAPTATION_FILE}: statistics must be finite with std > 0")
        return cls(mean, std, clips)


def clip_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over time of each row of one clip's input ``(rows, T)``: two float64
    ``(rows,)`` (NaN when ``T == 0``), as :func:`ser.monitor.stats.input_stats` computes ``mel_mean`` / ``mel_std``."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise SerError(f"clip input must be (rows, frames), got shape {a.shape}")
    if a.shape[1] == 0:
        return np.full(a.shape[0], np.nan), np.full(a.shape[0], np.nan)
    return a.mean(axis=1), a.std(axis=1)


def pooled_stats(means: np.ndarray, stds: np.ndarray) -> RowStats:
    """Pool per-clip statistics ``means`` / ``stds`` ``(n_clips, rows)`` into one :class:`RowStats`, each clip
    weighted equally; clips with a NaN row (no frames) are left out. Raises :class:`SerError` when none is left."""
    m = np.asarray(means, dtype=np.float64)
    s = np.asarray(stds, dtype=np.float64)
    if m.ndim != 2 or m.shape != s.shape:
        raise SerError(f"per-clip statistics must be two equal (n_clips, rows) arrays, got {m.shape} and {s.shape}")
    ok = np.all(np.isfinite(m), axis=1) & np.all(np.isfinite(s), axis=1)
    if not ok.any():
        raise SerError("no clip with usable statistics")
    m, s = m[ok], s[ok]
    mu = m.mean(axis=0)
    var = np.maximum((s**2 + m**2).mean(axis=0) - mu**2, 0.0)
    return RowStats(mu, np.sqrt(var), int(ok.sum()))


def stats_of_inputs(inputs: Sequence[np.ndarray], rows: tuple[int, int]) -> RowStats:
    """:func:`pooled_stats` of ``rows`` ``[start, stop)`` of model inputs ``(n_features, T)``."""
    per = [clip_stats(np.asarray(x)[rows[0] : rows[1]]) for x in inputs]
    if not per:
        raise SerError("no clip to estimate statistics from")
    return pooled_stats(np.stack([p[0] for p in per]), np.stack([p[1] for p in per]))


@dataclass(frozen=True)
class Adaptation:
    """The map of input ``rows`` ``[start, stop)`` from the ``target`` statistics onto the ``source`` ones."""

    rows: tuple[int, int]
    source: RowStats
    target: RowStats

    def __post_init__(self) -> None:
        n = self.rows[1] - self.rows[0]
        if self.rows[0] < 0 or n <= 0:
            raise SerError(f"adaptation rows must be [start, stop) with 0 <= start < stop, got {list(self.rows)}")
        if self.source.mean.size != n or self.target.mean.size != n:
            raise SerError(
                f"adaptation covers {n} rows but has {self.source.mean.size} source and "
                f"{self.target.mean.size} target statistics"
            )

    @property
    def scale(self) -> np.ndarray:
        """``sd_s / sd_t`` float32 ``(rows, 1)`` (the target deviation floored at :data:`MIN_STD`)."""
        return (self.source.std / np.maximum(self.target.std, MIN_STD)).astype(np.float32)[:, None]

    @property
    def shift(self) -> np.ndarray:
        """``mu_s - mu_t * sd_s / sd_t`` float32 ``(rows, 1)``."""
        a = self.source.std / np.maximum(self.target.std, MIN_STD)
        return (self.source.mean - self.target.mean * a).astype(np.float32)[:, None]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """A new float32 ``(n_features, T)`` input with :attr:`rows` mapped (``x * scale + shift``); other rows
        are copied unchanged. ``x`` is not modified."""
        a = np.array(x, dtype=np.float32, copy=True)
        lo, hi = self.rows
        if a.ndim != 2 or a.shape[0] < hi:
            raise SerError(f"adaptation of rows [{lo}, {hi}) needs an input of at least {hi} rows, got {a.shape}")
        a[lo:hi] = a[lo:hi] * self.scale + self.shift
        return a

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ADAPTATION_FORMAT,
            "method": METHOD,
            "rows": list(self.rows),
            "source": self.source.to_dict(),
            "target": self.target.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Adaptation:
        if not isinstance(d, Mapping) or d.get("format") != ADAPTATION_FORMAT:
            found = d.get("format") if isinstance(d, Mapping) else type(d).__name__
            raise SerError(f"{ADAPTATION_FILE}: format {found!r}, expected {ADAPTATION_FORMAT!r}")
        rows = d.get("rows")
        if not (isinstance(rows, Sequence) and len(rows) == 2 and all(isinstance(r, int) for r in rows)):
            raise SerError(f"{ADAPTATION_FILE}: rows must be [start, stop], got {rows!r}")
        return cls((int(rows[0]), int(rows[1])), RowStats.from_dict(d["source"]), RowStats.from_dict(d["target"]))


def logmel_rows(kind: str, feature_config: Mapping[str, Any]) -> tuple[int, int]:
    """The log-mel rows ``[0, n_mels)`` of a model input of frame ``kind`` (log-mel stacked first, as
    :func:`ser.monitor.stats.seen_logmel` reads them); :class:`SerError` when the input has no log-mel rows."""
    if str(kind).split("+")[0] != "logmel":
        raise SerError(f"adaptation maps log-mel input rows; this model reads {kind!r}")
    return 0, int(feature_config.get("n_mels", 64))


def read_adaptation(model_dir: str | Path, meta: Mapping[str, Any]) -> Adaptation | None:
    """The input-row map a model folder serves with: None when ``meta`` (its ``metadata.json``) has no
    ``adaptation`` entry, or when its adaptation is AdaBN (method ``batchnorm``, :mod:`ser.adabn`: re-estimated
    batch-norm statistics written into ``model.onnx``, nothing to apply to the input); a missing or invalid
    :data:`ADAPTATION_FILE` under an entry is a :class:`SerError` (serving it silently unadapted would hide it)."""
    entry = meta.get("adaptation")
    if entry is None:
        return None
    name = entry.get("file", ADAPTATION_FILE) if isinstance(entry, Mapping) else ADAPTATION_FILE
    path = Path(model_dir) / str(name)
    if not path.is_file():
        raise SerError(f"metadata.json names an adaptation but {path} is missing")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SerError(f"{path}: not readable JSON ({exc})") from None
    if isinstance(data, Mapping) and data.get("method") == BATCHNORM_METHOD:
        if data.get("format") != ADAPTATION_FORMAT:
            raise SerError(f"{path}: format {data.get('format')!r}, expected {ADAPTATION_FORMAT!r}")
        return None  # AdaBN (ser.adabn): the adapted statistics are in the graph itself, the input is not mapped
    return Adaptation.from_dict(data)


def utterance_normalised(metadata: dict[str, Any]) -> bool:
    """Does every network of a model folder standardise each clip's rows itself (``input_norm: utterance``)? Then
    the per-row map of an adaptation cancels out: adapting that model changes none of its answers."""
    norms: list[Any] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            if "input_norm" in x:
                norms.append(x["input_norm"])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(metadata.get("model", {}))
    return bool(norms) and all(n == "utterance" for n in norms)
