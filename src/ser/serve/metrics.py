"""Prometheus metrics: :class:`Metrics` (the app's collectors, on a registry per app) and
:class:`MetricsMiddleware` (requests and latency by route template)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

from ser.serve.engine import ModelHolder, ReloadResult


class Metrics:
    """The app's Prometheus collectors, on their own :class:`CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
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
        self.model_info = Gauge("ser_model_info", "The served model (value 1)", ["name", "version"], registry=r)
        self.model_loaded = Gauge("ser_model_loaded", "1 when a model is loaded", registry=r)
        self.reloads = Counter("ser_model_reloads", "Model (re)loads by result", ["result"], registry=r)
        self.auth = Counter(
            "ser_auth", "Key checks by key name (never the key) and result", ["key", "result"], registry=r
        )
        self.streams_active = Gauge("ser_stream_active", "Open WebSocket streams on /v1/stream", registry=r)
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
        self.stream_capacity = Gauge("ser_stream_capacity", "Most concurrent streams allowed (max_streams)", registry=r)
        self.drift_psi = Gauge(
            "ser_drift_psi",
            "PSI of the live window against the model's training reference, by statistic",
            ["statistic", "model_version"],
            registry=r,
        )
        self.drift_flagged = Gauge(
            "ser_drift_flagged", "Statistics of the live window over the drift threshold", ["model_version"], registry=r
        )
        self.drift_window = Gauge(
            "ser_drift_window_size", "Answers in the live drift window", ["model_version"], registry=r
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
            "ser_live_uar", "UAR of the answers with feedback (this process's window)", ["model_version"], registry=r
        )
        self.live_feedback = Gauge(
            "ser_live_feedback", "Answers with feedback in the live accuracy window", ["model_version"], registry=r
        )
        self.expected_uar = Gauge(
            "ser_model_expected_uar",
            "The model's cross-validated UAR (metadata evaluation.uar)",
            ["model_version"],
            registry=r,
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
            for stat in LIVE_STATISTICS:
                with contextlib.suppress(KeyError):
                    self.drift_psi.remove(stat, version)
            for g in (self.drift_flagged, self.drift_window):
                with contextlib.suppress(KeyError):
                    g.remove(version)
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
        p = holder.predictor
        self.model_info.clear()
        self.model_loaded.set(1 if p else 0)
        if p is not None:
            self.model_info.labels(p.name, p.version).set(1)


class _LogDropped:
    """``ser_prediction_log_dropped_total``: records the prediction log dropped (queue full, log closed), read
    from the log's own counter at scrape time (:meth:`attach`)."""

    def __init__(self, registry: CollectorRegistry):
        self.sources: list[Callable[[], int]] = []
        registry.register(self)

    def attach(self, source: Callable[[], int]) -> None:
        self.sources.append(source)

    def collect(self) -> Any:
        c = CounterMetricFamily("ser_prediction_log_dropped", "Prediction log records dropped (queue full or closed)")
        total = 0
        for src in self.sources:
            with contextlib.suppress(Exception):
                total += int(src())
        c.add_metric([], total)
        yield c

    def describe(self) -> Any:
        return []


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
