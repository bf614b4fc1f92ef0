"""Emotion timeline of a long recording: voice activity → segments → per-segment emotion → smoothed grid → summary.

Pure numpy core (every function but :func:`plot_timeline` and :func:`analyze`'s call of the model is a pure
function of arrays); the model enters only as a ``predict_proba`` callable, so the core is tested without one.

Units and shapes used throughout:

- ``audio``: mono float32 ``(n_samples,)`` at ``sr`` Hz, nominally in [-1, 1];
- ``segments``: float64 ``(n_segments, 2)``, rows ``(start_s, end_s)`` in seconds from the start, sorted and
  non-overlapping;
- ``probs``: float64 ``(n_segments, n_classes)``, rows summing to 1;
- the grid: ``K = ceil(duration_s / step_s)`` bins ``[k * step_s, (k + 1) * step_s)``, ``times`` are bin centres
  (seconds, ``(K,)``) and grid probabilities ``(K, n_classes)`` are NaN rows where a bin holds no voice.

Steps (:func:`analyze`): :func:`vad_flags` (webrtcvad on 16-bit PCM, 10/20/30 ms frames, plus an energy gate: a
frame quieter than ``min_level_db`` dBFS is never voice, as webrtcvad flags low steady noise as speech) →
:func:`flags_to_segments` → :func:`merge_gaps` (pauses shorter than ``merge_gap_s``) → :func:`drop_short`
(segments shorter than ``min_segment_s``) → :func:`split_long` (segments longer than ``max_segment_s`` cut into
equal windows) → :func:`segment_probabilities` → :func:`grid_probabilities` → :func:`smooth` (exponential or
median) → :func:`summarize` (share of voiced time per emotion by argmax, dominant emotion, peaks of one emotion,
``angry`` by default, above a threshold on the smoothed curve).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ser.errors import AudioError, ConfigError
from ser.vad import VadConfig, check_stop, vad_flags

Smoothing = Literal["ema", "median", "none"]
Channels = Literal["mix", "split"]
"""How a multi-channel recording is timed: ``mix`` (channels averaged, one timeline) or ``split`` (one timeline
per channel: a stereo call with the agent on one channel and the customer on the other)."""
MIX = "mix"
"""The channel name of a downmixed timeline."""
MAX_CHANNEL_NAME = 64


@dataclass(frozen=True)
class TimelineConfig:
    """Timeline parameters: segmentation, grid, smoothing and peak detection."""

    vad: VadConfig = field(default_factory=VadConfig)
    step_s: float = 0.5
    smoothing: Smoothing = "ema"
    tau_s: float = 1.0
    """EMA time constant (s): ``alpha = 1 - exp(-step_s / tau_s)``."""
    median_points: int = 5
    """Median window in grid points (odd)."""
    min_coverage: float = 0.25
    """Fraction of a grid bin that voiced segments must cover for the bin to count as voiced."""
    peak_label: str = "angry"
    peak_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.step_s <= 0:
            raise ConfigError(f"timeline step must be > 0 s, got {self.step_s}")
        if self.smoothing not in ("ema", "median", "none"):
            raise ConfigError(f"smoothing must be ema, median or none, got {self.smoothing!r}")
        if self.tau_s <= 0:
            raise ConfigError(f"tau_s must be > 0, got {self.tau_s}")
        if self.median_points < 1:
            raise ConfigError(f"median_points must be >= 1, got {self.median_points}")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ConfigError(f"min_coverage must be in [0, 1], got {self.min_coverage}")
        if not 0.0 <= self.peak_threshold <= 1.0:
            raise ConfigError(f"peak_threshold must be in [0, 1], got {self.peak_threshold}")


class ChannelError(AudioError):
    """A recording whose channels do not fit a per-channel timeline (mono, or not as many channels as names)."""


def parse_channel_names(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Channel names from ``"agent,customer"`` (or a sequence): unique, non-empty, at most
    :data:`MAX_CHANNEL_NAME` characters each; ``()`` for None or an empty string. :class:`ConfigError` otherwise."""
    if text is None:
        return ()
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    if names == [""]:
        return ()
    for n in names:
        if not n or len(n) > MAX_CHANNEL_NAME:
            raise ConfigError(f"channel names must be 1..{MAX_CHANNEL_NAME} characters, got {n!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"channel names must be unique, got {','.join(names)}")
    return tuple(names)


def channel_names(n_channels: int, names: Sequence[str] = ()) -> list[str]:
    """The names of the ``n_channels`` channels of a recording timed per channel (``split``): ``names`` when given
    (one per channel), else ``ch0``, ``ch1``, ... A mono recording, or a count that differs from ``names``, is a
    :class:`ChannelError`."""
    if n_channels < 2:
        raise ChannelError(
            "mono recording: a per-channel timeline (channels=split) needs one channel per speaker; use channels=mix"
        )
    if names and len(names) != n_channels:
        raise ChannelError(f"{n_channels} channels but {len(names)} channel names ({','.join(names)})")
    return list(names) if names else [f"ch{i}" for i in range(n_channels)]


# ----------------------------------------------------------------------------------------------------------------
# voice activity (frame flags in :mod:`ser.vad`)


def flags_to_segments(flags: np.ndarray, frame_s: float) -> np.ndarray:
    """Runs of True in ``flags`` ``(n_frames,)`` → segments ``(n, 2)`` in seconds (frame ``i`` covers
    ``[i * frame_s, (i + 1) * frame_s)``)."""
    f = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(f.astype(np.int8)))
    return (edges.reshape(-1, 2) * frame_s).astype(np.float64)


def merge_gaps(segments: np.ndarray, max_gap_s: float) -> np.ndarray:
    """Join consecutive segments whose pause is shorter than ``max_gap_s``: ``(n, 2)`` → ``(m, 2)``, ``m <= n``."""
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    if len(segs) < 2:
        return segs.copy()
    out = [segs[0].copy()]
    for start, end in segs[1:]:
        if start - out[-1][1] < max_gap_s:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append(np.array([start, end]))
    return np.array(out)


def drop_short(segments: np.ndarray, min_len_s: float) -> np.ndarray:
    """Segments at least ``min_len_s`` long: ``(n, 2)`` → ``(m, 2)``."""
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    return segs[(segs[:, 1] - segs[:, 0]) >= min_len_s - 1e-9]


def split_long(segments: np.ndarray, max_len_s: float) -> np.ndarray:
    """Cut each segment longer than ``max_len_s`` into ``ceil(len / max_len_s)`` equal windows: ``(n, 2)`` →
    ``(m, 2)``, ``m >= n``, same total duration."""
    out: list[tuple[float, float]] = []
    for start, end in np.asarray(segments, dtype=np.float64).reshape(-1, 2):
        k = max(1, math.ceil((end - start) / max_len_s - 1e-9))
        edges = np.linspace(start, end, k + 1)
        out.extend(itertools.pairwise(edges))
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def segment(
    audio: np.ndarray, sr: int, cfg: VadConfig | None = None, should_stop: Callable[[], bool] | None = None
) -> np.ndarray:
    """Voiced segments ``(n, 2)`` (seconds) of ``audio`` ``(n_samples,)`` at ``sr``: VAD, merge, drop, split."""
    cfg = cfg or VadConfig()
    segs = flags_to_segments(vad_flags(audio, sr, cfg, should_stop), cfg.frame_ms / 1000.0)
    segs = drop_short(merge_gaps(segs, cfg.merge_gap_s), cfg.min_segment_s)
    return split_long(segs, cfg.max_segment_s)


# ----------------------------------------------------------------------------------------------------------------
# per-segment probabilities and the grid


def segment_probabilities(
    audio: np.ndarray, sr: int, segments: np.ndarray, predict_proba: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``predict_proba`` (``(n_samples,)`` → ``(n_classes,)``) on each segment's samples.

    Returns ``(segments, probs)``: the segments the model accepted ``(m, 2)`` and their probabilities
    ``(m, n_classes)``; a segment the model rejects as audio (:class:`AudioError`, e.g. too short) is left out.
    """
    kept, rows = [], []
    for start, end in np.asarray(segments, dtype=np.float64).reshape(-1, 2):
        clip = audio[int(np.rint(start * sr)) : int(np.rint(end * sr))]
        try:
            p = np.asarray(predict_proba(clip), dtype=np.float64)
        except AudioError:
            continue
        kept.append((start, end))
        rows.append(p)
    if not rows:
        return np.zeros((0, 2)), np.zeros((0, 0))
    return np.array(kept, dtype=np.float64), np.stack(rows)


def grid_times(duration_s: float, step_s: float) -> np.ndarray:
    """Bin centres ``(K,)`` of ``K = ceil(duration_s / step_s)`` bins of ``step_s`` seconds."""
    k = max(0, math.ceil(duration_s / step_s - 1e-9))
    return (np.arange(k) + 0.5) * step_s


def grid_probabilities(
    segments: np.ndarray,
    probs: np.ndarray,
    duration_s: float,
    step_s: float,
    n_classes: int,
    min_coverage: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities on the grid: each bin is the overlap-weighted mean of the segments it overlaps.

    A bin counts as voiced when segments cover at least ``min_coverage`` of it (a fraction of ``step_s``).
    Returns ``(times (K,), P (K, n_classes))``; rows of unvoiced bins are NaN, the others sum to 1.
    """
    times = grid_times(duration_s, step_s)
    P = np.full((times.size, n_classes), np.nan)
    if times.size == 0 or len(segments) == 0:
        return times, P
    lo, hi = times - step_s / 2, times + step_s / 2
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    probs = np.asarray(probs, dtype=np.float64)
    weight = np.zeros(times.size)
    acc = np.zeros((times.size, n_classes))
    # Each segment only touches the bins it overlaps (memory O(K + n), not a dense (n, K) overlap matrix).
    first = np.clip(np.searchsorted(hi, segs[:, 0], side="right"), 0, times.size)
    last = np.clip(np.searchsorted(lo, segs[:, 1], side="left"), 0, times.size)
    for (start, end), a, b, p in zip(segs, first, last, probs, strict=True):
        overlap = np.clip(np.minimum(end, hi[a:b]) - np.maximum(start, lo[a:b]), 0.0, None)
        weight[a:b] += overlap
        acc[a:b] += overlap[:, None] * p[None, :]
    voiced = (weight > 1e-9) & (weight >= min_coverage * step_s - 1e-9)
    P[voiced] = acc[voiced] / weight[voiced, None]
    return times, P


def ema_smooth(P: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average over the voiced rows of ``P`` ``(K, C)``; NaN rows stay NaN and the state
    carries across them. ``alpha`` in (0, 1]: weight of the new row. Rows keep summing to 1."""
    out = np.full_like(P, np.nan, dtype=np.float64)
    state = None
    for k, row in enumerate(np.asarray(P, dtype=np.float64)):
        if np.isnan(row).any():
            continue
        state = row.copy() if state is None else alpha * row + (1.0 - alpha) * state
        out[k] = state
    return out


def median_smooth(P: np.ndarray, points: int) -> np.ndarray:
    """Centred running median of ``points`` grid points over the voiced rows of ``P`` ``(K, C)`` (NaN rows are
    ignored inside a window and stay NaN), each row renormalised to sum to 1."""
    P = np.asarray(P, dtype=np.float64)
    out = np.full_like(P, np.nan)
    half = points // 2
    for k in np.flatnonzero(~np.isnan(P).any(axis=1)):
        window = P[max(0, k - half) : k + half + 1]
        window = window[~np.isnan(window).any(axis=1)]
        m = np.median(window, axis=0)
        out[k] = m / m.sum() if m.sum() > 0 else P[k]
    return out


def smooth(P: np.ndarray, method: Smoothing, step_s: float, tau_s: float = 1.0, points: int = 5) -> np.ndarray:
    """Smoothed copy of grid probabilities ``P`` ``(K, C)`` (see :func:`ema_smooth`, :func:`median_smooth`)."""
    if method == "ema":
        return ema_smooth(P, 1.0 - math.exp(-step_s / tau_s))
    if method == "median":
        return median_smooth(P, points)
    return np.array(P, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------------
# summary


@dataclass(frozen=True)
class Peak:
    """A stretch of the smoothed timeline where one emotion's probability stays above the threshold."""

    start_s: float
    end_s: float
    max_p: float
    t_max_s: float


def find_peaks(times: np.ndarray, p: np.ndarray, threshold: float, step_s: float) -> list[Peak]:
    """Runs of grid points with ``p > threshold`` (NaN counts as below): ``times`` and ``p`` are ``(K,)``; each
    peak spans its bins' edges, with the maximum and its time."""
    above = np.nan_to_num(np.asarray(p, dtype=np.float64), nan=-1.0) > threshold
    peaks = []
    for i, j in (flags_to_segments(above, 1.0).astype(int)).tolist():
        k = i + int(np.argmax(p[i:j]))
        peaks.append(Peak(float(times[i] - step_s / 2), float(times[j - 1] + step_s / 2), float(p[k]), float(times[k])))
    return peaks


@dataclass(frozen=True)
class Summary:
    """Whole-recording summary. ``shares``: fraction of voiced time per label by the argmax of each segment
    (sums to 1 when anything is voiced, else all 0); ``mean_probabilities``: duration-weighted mean."""

    duration_s: float
    voiced_s: float
    voiced_fraction: float
    shares: dict[str, float]
    dominant: str | None
    mean_probabilities: dict[str, float]
    peak_label: str
    peak_threshold: float
    peaks: list[Peak]


def summarize(
    segments: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    duration_s: float,
    times: np.ndarray,
    smoothed: np.ndarray,
    *,
    step_s: float,
    peak_label: str = "angry",
    peak_threshold: float = 0.5,
) -> Summary:
    """:class:`Summary` of per-segment ``probs`` ``(n, C)`` and the smoothed grid ``(K, C)``."""
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    dur = segs[:, 1] - segs[:, 0]
    voiced = float(dur.sum())
    share = np.zeros(len(labels))
    mean = np.zeros(len(labels))
    if voiced > 0:
        np.add.at(share, np.argmax(probs, axis=1), dur)
        share /= voiced
        mean = (dur[:, None] * probs).sum(axis=0) / voiced
    peaks: list[Peak] = []
    if peak_label in labels and len(times):
        peaks = find_peaks(times, smoothed[:, list(labels).index(peak_label)], peak_threshold, step_s)
    return Summary(
        duration_s=float(duration_s),
        voiced_s=voiced,
        voiced_fraction=voiced / duration_s if duration_s > 0 else 0.0,
        shares={lab: float(s) for lab, s in zip(labels, share, strict=True)},
        dominant=labels[int(np.argmax(share))] if voiced > 0 else None,
        mean_probabilities={lab: float(m) for lab, m in zip(labels, mean, strict=True)},
        peak_label=peak_label,
        peak_threshold=peak_threshold,
        peaks=peaks,
    )


# ----------------------------------------------------------------------------------------------------------------
# the whole analysis


@dataclass
class Timeline:
    """Result of :func:`analyze`: see the module docstring for shapes."""

    labels: list[str]
    duration_s: float
    segments: np.ndarray
    probs: np.ndarray
    times: np.ndarray
    raw: np.ndarray
    smoothed: np.ndarray
    summary: Summary
    config: TimelineConfig

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``segments`` (start_s, end_s, label, confidence, probabilities), ``timeline``
        (column-wise: ``times_s``, ``voiced``, ``label`` and per-label smoothed probabilities, null where
        unvoiced), ``summary``."""
        segs = []
        for (start, end), p in zip(self.segments, self.probs, strict=True):
            k = int(np.argmax(p))
            segs.append(
                {
                    "start_s": round(float(start), 3),
                    "end_s": round(float(end), 3),
                    "label": self.labels[k],
                    "confidence": float(p[k]),
                    "probabilities": {lab: float(v) for lab, v in zip(self.labels, p, strict=True)},
                }
            )
        voiced = ~np.isnan(self.smoothed).any(axis=1) if self.smoothed.size else np.zeros(len(self.times), bool)
        columns = {
            lab: [float(v) if ok else None for v, ok in zip(self.smoothed[:, i], voiced, strict=True)]
            for i, lab in enumerate(self.labels)
        }
        point_labels = [
            self.labels[int(np.argmax(row))] if ok else None for row, ok in zip(self.smoothed, voiced, strict=True)
        ]
        summary = asdict(self.summary)
        return {
            "labels": list(self.labels),
            "duration_s": round(self.duration_s, 4),
            "segments": segs,
            "timeline": {
                "step_s": self.config.step_s,
                "smoothing": self.config.smoothing,
                "times_s": [round(float(t), 4) for t in self.times],
                "voiced": [bool(v) for v in voiced],
                "label": point_labels,
                "probabilities": columns,
            },
            "summary": summary,
        }


def analyze(
    audio: np.ndarray,
    sr: int,
    predict_proba: Callable[[np.ndarray], np.ndarray],
    labels: Sequence[str],
    cfg: TimelineConfig | None = None,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> Timeline:
    """Segment ``audio`` ``(n_samples,)`` at ``sr`` Hz, classify each segment with ``predict_proba`` and build the
    smoothed timeline and its summary. ``should_stop()``, checked before each VAD chunk and each model call, stops
    the analysis (:class:`ser.errors.Cancelled`) when it turns true."""
    cfg = cfg or TimelineConfig()
    labels = list(labels)
    audio = np.asarray(audio, dtype=np.float32)
    duration = audio.size / sr

    def model(x: np.ndarray) -> np.ndarray:
        check_stop(should_stop)
        return predict_proba(x)

    segs, probs = segment_probabilities(audio, sr, segment(audio, sr, cfg.vad, should_stop), model)
    if probs.size == 0:
        probs = np.zeros((0, len(labels)))
    times, raw = grid_probabilities(segs, probs, duration, cfg.step_s, len(labels), cfg.min_coverage)
    smoothed = smooth(raw, cfg.smoothing, cfg.step_s, cfg.tau_s, cfg.median_points)
    summary = summarize(
        segs,
        probs,
        labels,
        duration,
        times,
        smoothed,
        step_s=cfg.step_s,
        peak_label=cfg.peak_label,
        peak_threshold=cfg.peak_threshold,
    )
    return Timeline(labels, duration, segs, probs, times, raw, smoothed, summary, cfg)


# ----------------------------------------------------------------------------------------------------------------
# plot


def plot_timeline(tl: Timeline, path: str | Path, *, title: str | None = None) -> Path:
    """Draw ``tl`` to a PNG: stacked smoothed probabilities over time (gaps where unvoiced), voiced segments as a
    bar underneath, and the peak label's threshold and peaks. Uses the Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(max(6.0, min(24.0, 2.0 + tl.duration_s / 4)), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colors = _palette(len(tl.labels))
    if len(tl.times):
        filled = np.nan_to_num(tl.smoothed, nan=0.0)
        ax.stackplot(tl.times, filled.T, labels=tl.labels, colors=colors, alpha=0.85, step="mid")
    for start, end in tl.segments:
        ax.axvspan(start, end, ymin=0.0, ymax=0.02, color="black", alpha=0.6, lw=0)
    s = tl.summary
    for pk in s.peaks:
        ax.axvspan(pk.start_s, pk.end_s, color="red", alpha=0.12, lw=0)
    if s.peak_label in tl.labels:
        ax.axhline(s.peak_threshold, color="red", ls="--", lw=0.8, label=f"{s.peak_label} threshold")
    ax.set_xlim(0, max(tl.duration_s, 1e-3))
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("p(emotion), smoothed")
    ax.set_title(title or f"dominant: {s.dominant or 'none'}; voiced {s.voiced_s:.1f} of {s.duration_s:.1f} s")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]
