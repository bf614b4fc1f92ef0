"""Prometheus metrics: :class:`Metrics` (the app's collectors, on a registry per app) and
:class:`MetricsMiddleware` (requests and latency by route template).

**Several processes** (``ser serve --processes N``, :mod:`ser.serve.processes`): with ``PROMETHEUS_MULTIPROC_DIR``
set before ``prometheus_client`` is imported, every process writes its values to files there and
:meth:`Metrics.render` (``GET /metrics``, answered by whichever process the scrape reaches) aggregates all of them
with the client's ``MultiProcessCollector``: counters and histograms summed over the processes (dead ones
included), each gauge by its ``multiprocess_mode``: stream counts and capacity summed over the live processes, the
served model's ``ser_model_info`` the largest (1 while any live process serves that version, 0 once none does),
``ser_model_loaded`` the smallest (0 while any process has no model), the drift gauges the largest (the worst
process's window), live accuracy the smallest (each process joins only the feedback it receives itself). A series
a single process would remove (an old version's) is set to 0 instead, since the files keep it until the process
exits.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ser.serve.engine import ModelHolder, ReloadResult

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The folder of the multi-process metric files when this process writes there (module docstring), else None."""
    from prometheus_client import values

    path = os.environ.get(MULTIPROC_ENV)
    return path if path and values.ValueClass.__name__ != "MutexValue" else None


class Metrics:
    """The app's Prometheus collectors, on their own :class:`CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self._served: tuple[str, str] | None = None  # (name, version) this process's ser_model_info says
        self.requests = Counter(
            "ser_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "ser_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.predictions = Counter(
            "ser_predictions",
            "Predicted emotions (timeline: one per segment) by endpoint, emotion and model version",
            ["endpoint", "emotion", "model_version"],
            registry=r,
        )
        self.confidence = Histogram(
            "ser_prediction_confidence",
            "Probability of the predicted emotion",
            ["model_version"],
            buckets=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
            registry=r,
        )
        self.audio_duration = Histogram(
            "ser_audio_duration_seconds",
            "Duration of accepted audio",
            ["endpoint"],
            buckets=(0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.inference = Histogram(
            "ser_inference_seconds",
            "Decoding + inference time per request",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.no_speech = Counter(
            "ser_no_speech",
            "Clips answered without an emotion, by reason (no_speech, clipped)",
            ["endpoint", "reason"],
            registry=r,
        )
        self.model_info = Gauge(
            "ser_model_info", "The served model (value 1)", ["name", "version"], registry=r, multiprocess_mode="livemax"
        )
        self.model_loaded = Gauge(
            "ser_model_loaded", "1 when a model is loaded (every process)", registry=r, multiprocess_mode="livemin"
        )
        self.reloads = Counter("ser_model_reloads", "Model (re)loads by result", ["result"], registry=r)
        self.auth = Counter(
            "ser_auth", "Key checks by key name (never the key) and result", ["key", "result"], registry=r
        )
        self.streams_active = Gauge(
            "ser_stream_active", "Open WebSocket streams on /v1/stream", registry=r, multiprocess_mode="livesum"
        )
        self.streams = Counter("ser_streams", "WebSocket streams by how they ended", ["end"], registry=r)
        self.stream_messages = Counter(
            "ser_stream_messages", "Messages sent on /v1/stream by type (and error code)", ["type", "code"], registry=r
        )
        self.partial_latency = Histogram(
            "ser_stream_partial_latency_seconds",
            "Processing time of a stream partial (frame arrival to partial ready: resampling, VAD, inference)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )

        # monitoring (issue 13): capacity, live drift, input quality, live accuracy, the prediction log, shadow
        self.stream_capacity = Gauge(
            "ser_stream_capacity",
            "Most concurrent streams allowed (max_streams)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.drift_psi = Gauge(
            "ser_drift_psi",
            "PSI of the live window against the model's training reference, by statistic",
            ["statistic", "model_version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.drift_flagged = Gauge(
            "ser_drift_flagged",
            "Statistics of the live window over the drift threshold",
            ["model_version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.drift_window = Gauge(
            "ser_drift_window_size",
            "Answers in the live drift window",
            ["model_version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        fraction = (0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
        self.input_speech = Histogram(
            "ser_input_speech_fraction", "Share of 30 ms frames with speech per input", buckets=fraction, registry=r
        )
        self.input_clipped = Histogram(
            "ser_input_clipped_fraction", "Share of clipped samples per input", buckets=fraction, registry=r
        )
        self.input_snr = Histogram(
            "ser_input_snr_db",
            "Estimated speech-to-noise ratio per input, dB",
            buckets=(0, 5, 10, 15, 20, 30, 40, 60, 80, 100),
            registry=r,
        )
        self.input_level = Histogram(
            "ser_input_level_dbfs",
            "RMS level per input, dBFS",
            buckets=(-80, -60, -50, -40, -35, -30, -25, -20, -15, -10, -5, 0),
            registry=r,
        )
        self.live_uar = Gauge(
            "ser_live_uar",
            "UAR of the answers with feedback (this process's window)",
            ["model_version"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.live_feedback = Gauge(
            "ser_live_feedback",
            "Answers with feedback in the live accuracy window",
            ["model_version"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.expected_uar = Gauge(
            "ser_model_expected_uar",
            "The model's cross-validated UAR (metadata evaluation.uar)",
            ["model_version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.shadow = Counter(
            "ser_shadow_predictions",
            "Shadow model answers by its version and whether they agree with the served model's",
            ["model_version", "agree"],
            registry=r,
        )
        self.log_dropped = _LogDropped(registry=r)

    def observe_prediction(self, endpoint: str, label: str, confidence: float, model_version: str) -> None:
        self.predictions.labels(endpoint, label, model_version).inc()
        self.confidence.labels(model_version).observe(confidence)

    def observe_input(self, stats: Any) -> None:
        """The input-quality histograms of one answer's :class:`ser.monitor.stats.InputStats`."""
        self.input_speech.observe(stats.speech_fraction)
        self.input_clipped.observe(stats.clipped_fraction)
        self.input_snr.observe(stats.snr_db)
        self.input_level.observe(stats.rms_dbfs)

    def publish_drift(self, version: str, snap: Any) -> None:
        """Set (or, with ``snap`` None, remove) the drift gauges of ``version`` (a :class:`ser.monitor.live.
        DriftSnapshot`)."""
        from ser.monitor.live import LIVE_STATISTICS

        if snap is None:
            zero = multiprocess_dir() is not None  # the files keep a removed series: zero it (module docstring)
            for stat in LIVE_STATISTICS:
                with contextlib.suppress(KeyError):
                    _remove(self.drift_psi, (stat, version), zero)
            for g in (self.drift_flagged, self.drift_window):
                with contextlib.suppress(KeyError):
                    _remove(g, (version,), zero)
            return
        for stat, value in snap.psi.items():
            self.drift_psi.labels(stat, version).set(value)
        self.drift_flagged.labels(version).set(snap.n_flagged)
        self.drift_window.labels(version).set(snap.window)

    def publish_accuracy(self, acc: dict[str, tuple[float, int]]) -> None:
        for version, (uar, n) in acc.items():
            self.live_feedback.labels(version).set(n)
            if uar == uar:  # not NaN
                self.live_uar.labels(version).set(uar)

    def on_reload(self, result: ReloadResult) -> None:
        self.reloads.labels("ok" if result.ok else "failed").inc()

    def refresh_model(self, holder: ModelHolder) -> None:
        """``ser_model_loaded`` and ``ser_model_info`` of the model ``holder`` serves now (on every load, and at
        scrape)."""
        p = holder.predictor
        self.model_loaded.set(1 if p else 0)
        served = (str(p.name), str(p.version)) if p is not None else None
        if served == self._served:
            return
        if self._served is not None:
            with contextlib.suppress(KeyError):
                _remove(self.model_info, self._served, multiprocess_dir() is not None)
        if served is not None:
            self.model_info.labels(*served).set(1)
        self._served = served

    def render(self) -> bytes:
        """The text exposition of ``GET /metrics``: this app's registry, or with several processes
        (:func:`multiprocess_dir`) the aggregate of every process's files."""
        self.log_dropped.sync()
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        return generate_latest(registry)


def _remove(gauge: Gauge, labels: tuple[str, ...], zero: bool) -> None:
    """Remove a labelled series, or with several processes (``zero``) set it to 0: their files keep a series until
    the process exits, and the client does not remove labels there."""
    if zero:
        gauge.labels(*labels).set(0)
    else:
        gauge.remove(*labels)


class _LogDropped:
    """``ser_prediction_log_dropped_total``: records the prediction log dropped (queue full, log closed, a row
    that did not fit), the log's own counters (:meth:`attach`) carried into a counter by :meth:`sync`, at scrape
    time and after each logged answer (so that every process's count reaches the multi-process files)."""

    def __init__(self, registry: CollectorRegistry):
        self.sources: list[Callable[[], int]] = []
        self.counter = Counter(
            "ser_prediction_log_dropped", "Prediction log records dropped (queue full or closed)", registry=registry
        )
        self._seen = 0

    def attach(self, source: Callable[[], int]) -> None:
        self.sources.append(source)

    def sync(self) -> None:
        total = 0
        for src in self.sources:
            with contextlib.suppress(Exception):
                total += int(src())
        if total > self._seen:
            self.counter.inc(total - self._seen)
            self._seen = total


class MetricsMiddleware:
    """Pure ASGI middleware: counts every HTTP request by route template (``unmatched`` for unknown paths, so a
    scan cannot blow up label cardinality) and status, and times it."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "?")
            self.metrics.requests.labels(route, method, str(status[0])).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - t0)
