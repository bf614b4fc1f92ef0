"""Prometheus metrics: :class:`Metrics` (the app's collectors, on a registry per app) and
:class:`MetricsMiddleware` (requests and latency by route template)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
            "ser_predictions", "Predicted emotions (timeline: one per segment)", ["endpoint", "emotion"], registry=r
        )
        self.confidence = Histogram(
            "ser_prediction_confidence",
            "Probability of the predicted emotion",
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

    def observe_prediction(self, endpoint: str, label: str, confidence: float) -> None:
        self.predictions.labels(endpoint, label).inc()
        self.confidence.observe(confidence)

    def on_reload(self, result: ReloadResult) -> None:
        self.reloads.labels("ok" if result.ok else "failed").inc()

    def refresh_model(self, holder: ModelHolder) -> None:
        p = holder.predictor
        self.model_info.clear()
        self.model_loaded.set(1 if p else 0)
        if p is not None:
            self.model_info.labels(p.name, p.version).set(1)


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
