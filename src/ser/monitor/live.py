"""Live monitoring signals of a running service: drift of a sliding window of answers against the training
reference, and live accuracy of the answers that got feedback. What the service's Prometheus gauges show
(``ser_drift_psi``, ``ser_drift_flagged``, ``ser_drift_window_size``, ``ser_live_uar``, ``ser_live_feedback``).

Pure cores, thread-safe, O(1) per answer:

- :class:`LiveDrift`: the last ``window`` answers, each binned once on arrival into the reference's PSI bins
  (:func:`ser.monitor.drift.quantile_edges`, ``DriftConfig.bins`` bins cut at the reference's quantiles); a ring
  buffer of bin indices per statistic with running counts, so adding an answer is a few integer updates and a PSI
  (:func:`ser.monitor.drift.psi`) is computed from ``bins`` counts. A statistic is **flagged** as in the report
  (:mod:`ser.monitor.drift`): at least ``min_live`` live values, PSI at or above ``DriftConfig.psi`` and the
  chi-square test of the binned counts below α (Bonferroni over the statistics when ``bonferroni``). The KS test of
  the report is not run live (it needs the values, not the bins).
- :class:`LiveAccuracy`: the predicted label of the most recent answers by prediction id (bounded), and for the
  ids that got feedback the (true, predicted) pairs of the last ``window`` of them per model version; UAR (mean
  recall over the true classes present) from those.

:class:`LiveMonitor` is the thin wrapper the service holds: one :class:`LiveDrift` for the served model version
(replaced on reload), a :class:`LiveAccuracy`, and a daemon thread that recomputes the snapshots at most every
``interval_s`` seconds (only when something changed) and hands them to a ``publish`` callback, so the request path
never computes a PSI and the event loop never waits for one.

Statistics (:data:`LIVE_STATISTICS`): ``rms_dbfs``, ``peak_dbfs``, ``snr_db``, ``speech_fraction``,
``clipped_fraction``, ``highband_share`` (the log's ``high_band_share``), ``confidence`` (continuous) and
``label_mix`` (the predicted label, categorical over the model's labels; no label counts as
:data:`ser.monitor.drift.MISSING`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ser.monitor.drift import MISSING, DriftConfig, contingency_p, family_alpha, psi, quantile_edges

log = logging.getLogger("ser.monitor")

CONTINUOUS: tuple[str, ...] = (
    "rms_dbfs",
    "peak_dbfs",
    "snr_db",
    "speech_fraction",
    "clipped_fraction",
    "highband_share",
    "confidence",
)
LIVE_STATISTICS: tuple[str, ...] = (*CONTINUOUS, "label_mix")
COLUMN: dict[str, str] = {"highband_share": "high_band_share", "label_mix": "label"}
"""Column of the reference / log a live statistic reads, where its name differs."""


def column_of(stat: str) -> str:
    return COLUMN.get(stat, stat)


class _Ring:
    """Bin counts of the last ``window`` values (bin -1: missing, not counted)."""

    def __init__(self, n_bins: int, window: int):
        self.ring = np.full(window, -1, dtype=np.int32)
        self.counts = np.zeros(n_bins, dtype=np.int64)
        self.pos = 0

    def add(self, b: int) -> None:
        old = int(self.ring[self.pos])
        if old >= 0:
            self.counts[old] -= 1
        self.ring[self.pos] = b
        if b >= 0:
            self.counts[b] += 1
        self.pos = (self.pos + 1) % self.ring.size


@dataclass(frozen=True)
class DriftSnapshot:
    """PSI per statistic, its chi-square p-value and live count, the flagged statistics, the window's size."""

    psi: dict[str, float]
    p: dict[str, float]
    n: dict[str, int]
    flagged: tuple[str, ...]
    window: int

    @property
    def n_flagged(self) -> int:
        return len(self.flagged)


class LiveDrift:
    """Sliding-window drift of live answers against a reference (see the module docstring).

    ``reference``: a mapping statistic column → reference values (``(n,)``; ``label`` holds label strings or None),
    e.g. from :meth:`from_reference`. ``labels``: the model's classes (the categories of ``label_mix``).
    Statistics whose reference has fewer than ``cfg.min_reference`` finite values are left out (:attr:`stats`).
    """

    def __init__(
        self,
        reference: Mapping[str, Sequence[Any] | np.ndarray],
        labels: Sequence[str],
        cfg: DriftConfig | None = None,
        *,
        window: int = 1000,
    ):
        self.cfg = cfg or DriftConfig()
        self.window = int(window)
        if self.window < 1:
            raise ValueError("window must be >= 1")
        self.edges: dict[str, np.ndarray] = {}
        self.ref_counts: dict[str, np.ndarray] = {}
        for stat in CONTINUOUS:
            col = column_of(stat)
            if col not in reference:
                continue
            r = np.asarray(reference[col], dtype=np.float64)
            r = r[np.isfinite(r)]
            if r.size < self.cfg.min_reference:
                continue
            edges = quantile_edges(r, self.cfg.bins)
            self.edges[stat] = edges
            self.ref_counts[stat] = np.bincount(np.searchsorted(edges, r, "left"), minlength=edges.size + 1)
        self.categories = [*dict.fromkeys(str(lab) for lab in labels), MISSING]
        self._cat_index = {c: i for i, c in enumerate(self.categories)}
        if "label" in reference:
            ref_labels = [MISSING if v is None else str(v) for v in reference["label"]]
            counts = np.zeros(len(self.categories), dtype=np.int64)
            for v in ref_labels:
                i = self._cat_index.get(v)
                if i is not None:
                    counts[i] += 1
            if counts.sum() >= self.cfg.min_reference:
                self.ref_counts["label_mix"] = counts
        self.stats: tuple[str, ...] = tuple(s for s in LIVE_STATISTICS if s in self.ref_counts)
        self._rings = {s: _Ring(self.ref_counts[s].size, self.window) for s in self.stats}
        self._lock = threading.Lock()
        self.total = 0

    @classmethod
    def from_reference(
        cls, reference: Any, labels: Sequence[str], cfg: DriftConfig | None = None, *, window: int = 1000
    ) -> LiveDrift:
        """From a :class:`ser.monitor.reference.Reference` (its scalar columns, confidence and predicted label)."""
        cols: dict[str, Any] = {}
        for stat in LIVE_STATISTICS:
            col = column_of(stat)
            if col in reference.table.column_names:
                cols[col] = reference.table[col].to_pylist() if col == "label" else reference.column(col)
        return cls(cols, labels, cfg, window=window)

    def _bin(self, stat: str, value: Any) -> int:
        if stat == "label_mix":
            return self._cat_index.get(MISSING if value is None else str(value), -1)
        if value is None:
            return -1
        x = float(value)
        if not np.isfinite(x):
            return -1
        return int(np.searchsorted(self.edges[stat], x, "left"))

    def add(self, values: Mapping[str, Any]) -> None:
        """One answer: ``values`` maps statistic names (:data:`LIVE_STATISTICS`, or their column names) to values
        (None / NaN: missing; ``label_mix`` / ``label``: the predicted label or None)."""
        bins = {}
        for s in self.stats:
            v = values.get(s, values.get(column_of(s)))
            bins[s] = self._bin(s, v)
        with self._lock:
            for s, b in bins.items():
                self._rings[s].add(b)
            self.total += 1

    @property
    def size(self) -> int:
        """Answers in the window now."""
        return min(self.total, self.window)

    def snapshot(self) -> DriftSnapshot:
        with self._lock:
            counts = {s: self._rings[s].counts.copy() for s in self.stats}
            size = self.size
        alpha = family_alpha(self.cfg, len(self.stats))
        psis, ps, ns, flagged = {}, {}, {}, []
        for s, live in counts.items():
            n = int(live.sum())
            ns[s] = n
            if n == 0:
                continue
            ref = self.ref_counts[s]
            psis[s] = psi(ref, live, self.cfg.epsilon)
            ps[s] = contingency_p(ref, live)
            if n >= self.cfg.min_live and psis[s] >= self.cfg.psi and ps[s] < alpha:
                flagged.append(s)
        return DriftSnapshot(psis, ps, ns, tuple(flagged), size)


def uar(true: Sequence[Any], pred: Sequence[Any]) -> float:
    """Unweighted average recall: the mean over the classes present in ``true`` of the share of their items
    predicted right (balanced accuracy); NaN for no items."""
    t = np.asarray([str(x) for x in true], dtype=object)
    p = np.asarray([str(x) for x in pred], dtype=object)
    if t.size == 0:
        return float("nan")
    return float(np.mean([np.mean(p[t == c] == c) for c in np.unique(t)]))


class LiveAccuracy:
    """Live accuracy from feedback: :meth:`predicted` remembers the answer of an id (the most recent ``max_ids``),
    :meth:`feedback` joins a true label to it; :meth:`snapshot` gives ``{model_version: (uar, n)}`` over the last
    ``window`` labelled answers of each version (feedback for one id again replaces the earlier one)."""

    def __init__(self, *, max_ids: int = 100_000, window: int = 1000):
        self.max_ids, self.window = int(max_ids), int(window)
        self._answers: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._pairs: dict[str, OrderedDict[str, tuple[str, str]]] = {}
        self._lock = threading.Lock()

    def predicted(self, prediction_id: str, model_version: str, label: str | None) -> None:
        if label is None:  # no answer to be right or wrong about
            return
        with self._lock:
            self._answers[prediction_id] = (str(model_version), str(label))
            if len(self._answers) > self.max_ids:
                self._answers.popitem(last=False)

    def feedback(self, prediction_id: str, true_label: str) -> bool:
        """Join ``true_label`` to the remembered answer of ``prediction_id``; False when it is not remembered."""
        with self._lock:
            hit = self._answers.get(prediction_id)
            if hit is None:
                return False
            version, pred = hit
            pairs = self._pairs.setdefault(version, OrderedDict())
            pairs.pop(prediction_id, None)
            pairs[prediction_id] = (str(true_label), pred)
            if len(pairs) > self.window:
                pairs.popitem(last=False)
            return True

    def snapshot(self) -> dict[str, tuple[float, int]]:
        with self._lock:
            pairs = {v: list(p.values()) for v, p in self._pairs.items()}
        return {v: (uar([t for t, _ in ps], [p for _, p in ps]), len(ps)) for v, ps in pairs.items()}


# ----------------------------------------------------------------------------------------------------------------
# the wrapper the service holds


@dataclass
class LiveMonitor:
    """Drift of the served version and live accuracy, recomputed by a daemon thread every ``interval_s`` seconds
    (when something changed) and handed to ``publish_drift(version, snapshot | None)`` (None: the version has no
    drift any more, e.g. after a reload) and ``publish_accuracy({version: (uar, n)})``."""

    publish_drift: Callable[[str, DriftSnapshot | None], None]
    publish_accuracy: Callable[[dict[str, tuple[float, int]]], None]
    cfg: DriftConfig = field(default_factory=DriftConfig)
    window: int = 1000
    interval_s: float = 5.0
    max_ids: int = 100_000

    def __post_init__(self) -> None:
        self.accuracy = LiveAccuracy(max_ids=self.max_ids, window=self.window)
        self.version: str | None = None
        self.drift: LiveDrift | None = None
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def set_model(self, version: str, reference: Any, labels: Iterable[str]) -> None:
        """The served model is now ``version`` with ``reference`` (a :class:`~ser.monitor.reference.Reference`, or
        None: no drift gauges for it, and a log line)."""
        with self._lock:
            old = self.version
            self.version = str(version)
            try:
                self.drift = (
                    None
                    if reference is None
                    else LiveDrift.from_reference(reference, list(labels), self.cfg, window=self.window)
                )
            except Exception as exc:  # a bad reference must not stop the service
                log.warning("live drift off for model version %s: reference unusable (%s)", version, exc)
                self.drift = None
        if reference is None:
            log.info("live drift off for model version %s: its folder has no reference.parquet", version)
        if old is not None and old != self.version:
            self.publish_drift(old, None)
        self._dirty.set()

    def observe(self, version: str, values: Mapping[str, Any]) -> None:
        """One primary answer of model ``version`` (ignored when it is not the one being watched)."""
        d = self.drift
        if d is not None and version == self.version:
            d.add(values)
            self._dirty.set()

    def predicted(self, prediction_id: str, version: str, label: str | None) -> None:
        self.accuracy.predicted(prediction_id, version, label)

    def feedback(self, prediction_id: str, true_label: str) -> bool:
        hit = self.accuracy.feedback(prediction_id, true_label)
        if hit:
            self._dirty.set()
        return hit

    def recompute(self) -> None:
        """Compute and publish the snapshots now."""
        self._dirty.clear()
        with self._lock:
            version, drift = self.version, self.drift
        if version is not None:
            self.publish_drift(version, drift.snapshot() if drift is not None else None)
        self.publish_accuracy(self.accuracy.snapshot())

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                if self._dirty.is_set():
                    try:
                        self.recompute()
                    except Exception:  # never let the thread die on a bad value
                        log.exception("live monitoring recompute failed")

        self._thread = threading.Thread(target=loop, name="ser-live-monitor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
