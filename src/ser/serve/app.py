"""The HTTP API: FastAPI app factory :func:`create_app` over a hot-reloadable exported model.

Routes (``X-API-Key`` required on the ``/v1`` POST routes when keys are configured):

=========================== =====================================================================================
``POST /v1/predict``        one clip: multipart field ``file``, or the raw body with an ``audio/*`` or
                            ``application/octet-stream`` content type → label, probabilities, timing, version
``POST /v1/predict/batch``  several multipart ``files`` → one result or one error per file
``POST /v1/timeline``       a long recording → voiced segments, smoothed emotion timeline, summary
``GET /v1/model``           name, version, labels, metrics of the served model
``POST /v1/admin/reload``   reload the model from its source (a failed load keeps the old one: 409)
``GET /healthz``            the process answers; ``GET /readyz``: 503 until a model is loaded
``GET /metrics``            Prometheus text format (a registry per app)
``WS /v1/stream``           real-time stream: audio frames in, partial and per-utterance emotions out (protocol in
                            :mod:`ser.serve.stream`; the key as ``X-API-Key`` header or ``?api_key=``)
``GET /``                   the browser demo (microphone streaming, file timeline; files under ``static/``)
=========================== =====================================================================================

Every error is JSON ``{"error": {"code": ..., "message": ...}}`` with a 4xx status for a bad request: empty
upload 400 ``empty_audio``; not decodable (corrupt, text, unsupported codec) 422 ``undecodable_audio``; NaN or
too-short audio 422 ``invalid_audio``; longer than allowed 422 ``audio_too_long``; more bytes than allowed 413
``too_large``; a content type that is neither multipart nor audio 415 ``unsupported_media_type``; no file 422
``missing_file``; bad key 401 ``unauthorized``; inference slower than the timeout 504 ``timeout``; no model 503
``not_ready``. Decoding and inference run in a thread pool (bounded by ``inference_workers``). Uploads are held in
memory only (the multipart body is parsed in memory, never spooled to disk) and never stored or logged.
"""

from __future__ import annotations

import functools
import hmac
import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import numpy as np
from fastapi import Depends, FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from ser.errors import AudioError
from ser.serve.engine import ModelHolder, ModelNotReady, ReloadResult

ENV_PREFIX = "SER_"
STATIC_DIR = Path(__file__).resolve().parent / "static"
log = logging.getLogger("ser.serve")
MULTIPART_SLACK = 64 * 1024
"""Bytes a multipart body may hold beyond its files (boundaries, part headers)."""


# ----------------------------------------------------------------------------------------------------------------
# settings


class Settings(BaseModel):
    """Server settings. :meth:`from_env` reads ``SER_<FIELD>`` environment variables (lists comma-separated)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_dir: Path | None = Field(None, description="an exported model folder (model.onnx + metadata.json)")
    workdir: Path | None = Field(None, description="a workdir with a registry (default $SER_WORKDIR or ./runs)")
    model_ref: str | None = Field(None, description="registry reference NAME[@ALIAS|/VERSION]; default champion")
    api_keys: list[str] = Field(default_factory=list, description="accepted X-API-Key values; empty: no auth")
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest upload (one file), bytes")
    max_batch_bytes: int = Field(64 * 1024 * 1024, gt=0, description="largest batch request body, bytes")
    max_batch_files: int = Field(16, ge=1)
    max_audio_s: float = Field(60.0, gt=0, description="longest clip for /v1/predict, seconds")
    max_timeline_audio_s: float = Field(1800.0, gt=0, description="longest recording for /v1/timeline, seconds")
    request_timeout_s: float = Field(30.0, gt=0, description="decoding + inference time limit per request")
    cors_origins: list[str] = Field(default_factory=list)
    reload_poll_s: float = Field(0.0, ge=0, description="poll the model source every N s and reload; 0: off")
    inference_workers: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1)
    threads: int = Field(1, ge=1, description="onnxruntime threads per request")
    max_streams: int = Field(64, ge=1, description="concurrent WebSocket streams; more are refused (close 1013)")
    max_stream_s: float = Field(3600.0, gt=0, description="longest stream (audio seconds) on /v1/stream")
    stream_idle_timeout_s: float = Field(60.0, gt=0, description="close a stream silent for this long, seconds")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``SER_*`` variables (``SER_API_KEY`` adds one key), then ``overrides`` (None skipped)."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None or raw == "":
                continue
            is_list = "list[" in str(info.annotation)
            values[name] = [v.strip() for v in raw.split(",") if v.strip()] if is_list else raw
        if env.get("SER_API_KEY"):
            values["api_keys"] = [*values.get("api_keys", []), env["SER_API_KEY"]]
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "model_dir" in overrides or "workdir" in overrides:  # an explicit source replaces the environment's
            values.pop("model_dir", None)
            values.pop("workdir", None)
        values.update(overrides)
        return cls(**values)

    @model_validator(mode="after")
    def _one_source(self) -> Settings:
        if self.model_dir is not None and (self.workdir is not None or self.model_ref is not None):
            raise ValueError("give model_dir or workdir (+ model_ref), not both")
        return self


# ----------------------------------------------------------------------------------------------------------------
# response models


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable error code, e.g. undecodable_audio")
    message: str
    details: dict[str, Any] | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


class PredictionOut(BaseModel):
    label: str = Field(description="the most probable emotion")
    confidence: float = Field(description="its probability")
    probabilities: dict[str, float] = Field(description="emotion → probability, summing to 1")
    duration_s: float = Field(description="clip duration, seconds")
    processing_ms: float = Field(description="decoding + inference time, milliseconds")
    model_name: str
    model_version: str
    filename: str | None = None


class BatchItem(BaseModel):
    filename: str | None
    ok: bool
    result: PredictionOut | None = None
    error: ErrorBody | None = None
    status: int = Field(200, description="the status this file would have had on /v1/predict")


class BatchOut(BaseModel):
    model_version: str
    n_ok: int
    n_failed: int
    results: list[BatchItem]


class SegmentOut(BaseModel):
    start_s: float
    end_s: float
    label: str
    confidence: float
    probabilities: dict[str, float]


class TimelineGrid(BaseModel):
    step_s: float
    smoothing: str
    times_s: list[float] = Field(description="bin centres, seconds")
    voiced: list[bool]
    label: list[str | None] = Field(description="argmax of the smoothed probabilities; null where unvoiced")
    probabilities: dict[str, list[float | None]] = Field(description="emotion → smoothed p per bin; null unvoiced")


class PeakOut(BaseModel):
    start_s: float
    end_s: float
    max_p: float
    t_max_s: float


class SummaryOut(BaseModel):
    duration_s: float
    voiced_s: float
    voiced_fraction: float
    shares: dict[str, float] = Field(description="fraction of voiced time per emotion (argmax); sums to 1")
    dominant: str | None
    mean_probabilities: dict[str, float]
    peak_label: str
    peak_threshold: float
    peaks: list[PeakOut]


class TimelineOut(BaseModel):
    model_name: str
    model_version: str
    labels: list[str]
    duration_s: float
    processing_ms: float
    segments: list[SegmentOut]
    timeline: TimelineGrid
    summary: SummaryOut


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    labels: list[str]
    sample_rate: int
    metrics: dict[str, Any] = Field(default_factory=dict, description="metadata.json 'metrics'")
    evaluation: dict[str, Any] | None = None
    model: dict[str, Any] | None = Field(None, description="architecture and parameter count")
    created: str | None = None
    registered: str | None = None
    code_version: str | None = None
    loaded_at: str | None = None
    source: str


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    status: Literal["ready"] = "ready"
    model_name: str
    model_version: str


class ReloadOut(BaseModel):
    ok: bool
    changed: bool
    version: str | None
    previous_version: str | None
    source: str | None
    seconds: float


# ----------------------------------------------------------------------------------------------------------------
# errors


class ApiError(Exception):
    """A request the API refuses: HTTP ``status``, a ``code`` and a one-line ``message``."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details

    def body(self) -> ErrorBody:
        return ErrorBody(code=self.code, message=self.message, details=self.details)


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> JSONResponse:
    body = ErrorOut(error=ErrorBody(code=code, message=message, details=details))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        msg = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errs[:5])
        return error_response(422, "invalid_request", msg or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:  # a bug, never a bad input
        return error_response(500, "internal", f"internal error ({type(exc).__name__})")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorOut, "description": d}
    for s, d in {
        400: "empty upload or malformed multipart body",
        401: "missing or wrong X-API-Key",
        413: "upload larger than allowed",
        415: "content type neither multipart/form-data nor audio",
        422: "missing file, undecodable / invalid / too long audio, bad parameters",
        503: "no model loaded",
        504: "inference timed out",
    }.items()
}

_BINARY = {"type": "string", "format": "binary"}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": _BINARY}, "required": ["file"]}
            },
            "audio/*": {"schema": _BINARY},
            "application/octet-stream": {"schema": _BINARY},
        },
    }
}
BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": _BINARY}},
                    "required": ["files"],
                }
            }
        },
    }
}


# ----------------------------------------------------------------------------------------------------------------
# uploads (in memory only)


@dataclass(frozen=True)
class Part:
    """One multipart part: form field ``name``, client ``filename`` (None for a plain field), its bytes."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """Parse a ``multipart/form-data`` body in memory (nothing is spooled to disk). Raises :class:`ApiError` 400
    when the body or its boundary is malformed."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_multipart", "multipart/form-data without a boundary")
    parts: list[Part] = []
    cur: dict[str, Any] = {}

    def on_part_begin() -> None:
        cur.clear()
        cur.update(headers={}, field=b"", value=b"", data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        cur["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        cur["value"] += data[start:end]

    def on_header_end() -> None:
        cur["headers"][cur["field"].decode("latin-1").lower()] = cur["value"].decode("latin-1")
        cur["field"], cur["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        cur["data"] += data[start:end]

    def on_part_end() -> None:
        _, disp = parse_options_header(cur["headers"].get("content-disposition", ""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp[b"filename"].decode("utf-8", "replace") if b"filename" in disp else None
        parts.append(Part(name, filename, cur["headers"].get("content-type"), bytes(cur["data"])))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {exc}") from None
    return parts


def media_type(request: Request) -> str:
    """The request's content type without parameters, lower case ('' when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_audio_type(mime: str) -> bool:
    return mime.startswith("audio/") or mime == "application/octet-stream"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (or declares more)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise ApiError(413, "too_large", f"request body exceeds the limit of {limit} bytes")
    return bytes(buf)


def _check_size(data: bytes, limit: int) -> None:
    if len(data) > limit:
        raise ApiError(413, "too_large", f"file of {len(data)} bytes exceeds the limit of {limit} bytes")


async def read_uploads(request: Request, settings: Settings, *, batch: bool) -> list[Part]:
    """The uploaded file(s) of a request: multipart ``file`` (one) / ``files`` (batch; ``file`` also taken), or for
    a single upload the raw body with an audio content type."""
    mime = media_type(request)
    if mime == "multipart/form-data":
        limit = settings.max_batch_bytes if batch else settings.max_upload_bytes + MULTIPART_SLACK
        parts = parse_multipart(await read_body(request, limit), request.headers["content-type"])
        names = ("files", "file") if batch else ("file",)
        files = [p for p in parts if p.name in names]
        if not files:
            found = ", ".join(sorted({p.name for p in parts})) or "none"
            raise ApiError(422, "missing_file", f"multipart field {names[0]!r} is missing (fields: {found})")
        if not batch:
            _check_size(files[0].data, settings.max_upload_bytes)
        return files if batch else files[:1]
    if batch:
        raise ApiError(415, "unsupported_media_type", f"batch takes multipart/form-data, got {mime or 'no type'}")
    if is_audio_type(mime):
        data = await read_body(request, settings.max_upload_bytes)
        return [Part("file", request.headers.get("x-filename"), mime, data)]
    if not mime:
        body = await read_body(request, settings.max_upload_bytes)
        if not body:
            raise ApiError(422, "missing_file", "no file: send multipart field 'file' or an audio/* body")
    raise ApiError(
        415, "unsupported_media_type", f"content type {mime or 'none'!r}: use multipart/form-data or audio/*"
    )


# ----------------------------------------------------------------------------------------------------------------
# decoding and inference (run in worker threads)


def decode_audio(data: bytes, sr: int, max_s: float) -> np.ndarray:
    """Upload bytes → mono float32 ``(n_samples,)`` at ``sr``; :class:`ApiError` for every bad input. The header's
    duration is checked before the samples are decoded."""
    from ser.audio import decode_bytes, probe

    if not data:
        raise ApiError(400, "empty_audio", "empty file (0 bytes)")
    try:
        info = probe(io.BytesIO(data))
    except AudioError as exc:
        raise ApiError(422, "undecodable_audio", str(exc)) from None
    if info.duration_s > max_s:
        raise ApiError(422, "audio_too_long", f"audio of {info.duration_s:.1f} s exceeds the limit of {max_s:g} s")
    try:
        audio = decode_bytes(data, sr)
    except AudioError as exc:
        code = "undecodable_audio" if str(exc).startswith("undecodable") else "invalid_audio"
        raise ApiError(422, code, str(exc)) from None
    if audio.size / sr > max_s + 1e-3:
        raise ApiError(422, "audio_too_long", f"audio of {audio.size / sr:.1f} s exceeds the limit of {max_s:g} s")
    return audio


def predict_bytes(predictor: Any, data: bytes, max_s: float) -> Any:
    """Decode and classify one upload → :class:`ser.inference.Prediction` (processing_ms covers both)."""
    t0 = time.perf_counter()
    audio = decode_audio(data, predictor.sample_rate, max_s)
    try:
        proba = predictor.predict_proba(audio)
    except AudioError as exc:
        raise ApiError(422, "invalid_audio", str(exc)) from None
    return predictor.make_prediction(proba, audio.size / predictor.sample_rate, (time.perf_counter() - t0) * 1e3)


def predict_many(predictor: Any, parts: list[Part], max_bytes: int, max_s: float) -> list[tuple[Part, Any]]:
    """Each part's prediction or its :class:`ApiError` (one bad file does not fail the batch)."""
    out: list[tuple[Part, Any]] = []
    for part in parts:
        try:
            _check_size(part.data, max_bytes)
            out.append((part, predict_bytes(predictor, part.data, max_s)))
        except ApiError as exc:
            out.append((part, exc))
    return out


def timeline_bytes(predictor: Any, data: bytes, max_s: float, cfg: Any) -> tuple[Any, float]:
    """Decode one upload and run :func:`ser.serve.timeline.analyze` → ``(Timeline, processing_ms)``."""
    from ser.serve.timeline import analyze

    t0 = time.perf_counter()
    audio = decode_audio(data, predictor.sample_rate, max_s)
    try:
        tl = analyze(audio, predictor.sample_rate, predictor.predict_proba, predictor.labels, cfg)
    except AudioError as exc:
        raise ApiError(422, "invalid_audio", str(exc)) from None
    return tl, (time.perf_counter() - t0) * 1e3


# ----------------------------------------------------------------------------------------------------------------
# metrics


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
        self.model_info = Gauge("ser_model_info", "The served model (value 1)", ["name", "version"], registry=r)
        self.model_loaded = Gauge("ser_model_loaded", "1 when a model is loaded", registry=r)
        self.reloads = Counter("ser_model_reloads", "Model (re)loads by result", ["result"], registry=r)
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


# ----------------------------------------------------------------------------------------------------------------
# the app


def _prediction_out(pred: Any, predictor: Any, filename: str | None) -> PredictionOut:
    d = pred.to_dict()
    return PredictionOut(**d, confidence=d["probabilities"][d["label"]], model_name=predictor.name, filename=filename)


def create_app(settings: Settings | None = None, *, holder: ModelHolder | None = None) -> FastAPI:
    """The API over ``settings``' model source (or a given, possibly already loaded, ``holder``).

    The model loads in a background thread at start-up (``/readyz`` is 503 until then); with ``reload_poll_s``
    the source is polled and the model hot-reloaded when it changes.
    """
    import threading
    from contextlib import asynccontextmanager

    settings = settings or Settings()
    if holder is None:
        holder = ModelHolder(
            settings.model_dir,
            workdir=settings.workdir if settings.model_dir is None else None,
            ref=settings.model_ref,
            threads=settings.threads,
        )
    metrics = Metrics()
    holder.listeners.append(metrics.on_reload)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.limiter = anyio.CapacityLimiter(settings.inference_workers)
        if not holder.ready:
            threading.Thread(target=holder.reload, name="ser-model-load", daemon=True).start()
        if settings.reload_poll_s > 0:
            holder.start_polling(settings.reload_poll_s)
        try:
            yield
        finally:
            holder.stop_polling()

    app = FastAPI(
        title="ser: speech emotion recognition",
        version=_package_version(),
        description=__doc__.split("\n\n")[0],
        lifespan=lifespan,
    )
    app.state.settings, app.state.holder, app.state.metrics = settings, holder, metrics
    _install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Content-Type", "X-Filename"],
        )

    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required when keys are configured")

    def key_ok(key: str | None) -> bool:
        if not settings.api_keys:
            return True
        return bool(key) and any(hmac.compare_digest(key.encode(), k.encode()) for k in settings.api_keys)

    async def require_key(key: str | None = Depends(key_header)) -> None:
        if not key_ok(key):
            raise ApiError(401, "unauthorized", "missing or invalid X-API-Key")

    def predictor() -> Any:
        try:
            return holder.get()
        except ModelNotReady as exc:
            raise ApiError(503, "not_ready", str(exc)) from None

    def limiter_of(app_: Any) -> anyio.CapacityLimiter:
        limiter = getattr(app_.state, "limiter", None)
        if limiter is None:  # app used without its lifespan
            limiter = app_.state.limiter = anyio.CapacityLimiter(settings.inference_workers)
        return limiter

    async def in_thread(request: Request, fn: Any, *args: Any) -> Any:
        limiter = limiter_of(request.app)
        try:
            with anyio.fail_after(settings.request_timeout_s):
                return await anyio.to_thread.run_sync(
                    functools.partial(fn, *args), abandon_on_cancel=True, limiter=limiter
                )
        except TimeoutError:
            raise ApiError(
                504, "timeout", f"decoding + inference took longer than {settings.request_timeout_s:g} s"
            ) from None

    guarded = [Depends(require_key)]

    @app.get("/healthz", response_model=HealthOut, tags=["ops"], summary="The process answers")
    async def healthz() -> HealthOut:
        return HealthOut()

    @app.get(
        "/readyz",
        response_model=ReadyOut,
        tags=["ops"],
        summary="Ready when a model is loaded",
        responses={503: ERROR_RESPONSES[503]},
    )
    async def readyz() -> ReadyOut:
        p = predictor()
        return ReadyOut(model_name=p.name, model_version=p.version)

    @app.get("/v1/model", response_model=ModelInfo, tags=["model"], responses={503: ERROR_RESPONSES[503]})
    async def model_info() -> ModelInfo:
        """The served model: name, version, labels (class order), evaluation metrics from its metadata."""
        p = predictor()
        meta = p.metadata
        return ModelInfo(
            name=p.name,
            version=p.version,
            labels=p.labels,
            sample_rate=p.sample_rate,
            metrics=meta.get("metrics") or {},
            evaluation=meta.get("evaluation"),
            model=meta.get("model"),
            created=meta.get("created"),
            registered=meta.get("registered"),
            code_version=meta.get("code_version"),
            loaded_at=holder.loaded_at,
            source=holder.describe_source(),
        )

    @app.post(
        "/v1/predict",
        response_model=PredictionOut,
        tags=["predict"],
        dependencies=guarded,
        responses=ERROR_RESPONSES,
        openapi_extra=UPLOAD_BODY,
    )
    async def predict(request: Request) -> PredictionOut:
        """Emotion of one clip: multipart field ``file`` or a raw ``audio/*`` body (any format libsndfile reads)."""
        p = predictor()
        part = (await read_uploads(request, settings, batch=False))[0]
        pred = await in_thread(request, predict_bytes, p, part.data, settings.max_audio_s)
        out = _prediction_out(pred, p, part.filename)
        metrics.observe_prediction("predict", out.label, out.confidence)
        metrics.audio_duration.labels("predict").observe(out.duration_s)
        metrics.inference.labels("predict").observe(out.processing_ms / 1e3)
        return out

    @app.post(
        "/v1/predict/batch",
        response_model=BatchOut,
        tags=["predict"],
        dependencies=guarded,
        responses=ERROR_RESPONSES,
        openapi_extra=BATCH_BODY,
    )
    async def predict_batch(request: Request) -> BatchOut:
        """Emotion of several clips (multipart ``files``); a bad file gets its own error, the others still run."""
        p = predictor()
        parts = await read_uploads(request, settings, batch=True)
        if len(parts) > settings.max_batch_files:
            raise ApiError(422, "too_many_files", f"{len(parts)} files; at most {settings.max_batch_files} per batch")
        t0 = time.perf_counter()
        done = await in_thread(request, predict_many, p, parts, settings.max_upload_bytes, settings.max_audio_s)
        metrics.inference.labels("batch").observe(time.perf_counter() - t0)
        items = []
        for part, res in done:
            if isinstance(res, ApiError):
                items.append(BatchItem(filename=part.filename, ok=False, error=res.body(), status=res.status))
                continue
            out = _prediction_out(res, p, part.filename)
            metrics.observe_prediction("batch", out.label, out.confidence)
            metrics.audio_duration.labels("batch").observe(out.duration_s)
            items.append(BatchItem(filename=part.filename, ok=True, result=out))
        n_ok = sum(i.ok for i in items)
        return BatchOut(model_version=p.version, n_ok=n_ok, n_failed=len(items) - n_ok, results=items)

    @app.post(
        "/v1/timeline",
        response_model=TimelineOut,
        tags=["predict"],
        dependencies=guarded,
        responses=ERROR_RESPONSES,
        openapi_extra=UPLOAD_BODY,
    )
    async def timeline(
        request: Request,
        step_s: float = Query(0.5, gt=0, le=60, description="grid step, seconds"),
        smoothing: Literal["ema", "median", "none"] = Query("ema"),
        tau_s: float = Query(1.0, gt=0, le=600, description="EMA time constant, seconds"),
        aggressiveness: int = Query(2, ge=0, le=3, description="webrtcvad mode"),
        max_segment_s: float = Query(4.0, gt=0.25, le=30, description="longer voiced stretches are split"),
        peak_label: str = Query("angry", max_length=64),
        peak_threshold: float = Query(0.5, ge=0, le=1),
    ) -> TimelineOut:
        """Emotion timeline of a long recording: voice-activity segments, each classified; probabilities on a
        smoothed grid; share of voiced time per emotion, dominant emotion and peaks of ``peak_label``."""
        from ser.serve.timeline import TimelineConfig, VadConfig

        cfg = TimelineConfig(
            vad=VadConfig(aggressiveness=aggressiveness, max_segment_s=max_segment_s),
            step_s=step_s,
            smoothing=smoothing,
            tau_s=tau_s,
            peak_label=peak_label,
            peak_threshold=peak_threshold,
        )
        p = predictor()
        part = (await read_uploads(request, settings, batch=False))[0]
        tl, ms = await in_thread(request, timeline_bytes, p, part.data, settings.max_timeline_audio_s, cfg)
        for seg_p in tl.probs:
            k = int(np.argmax(seg_p))
            metrics.observe_prediction("timeline", tl.labels[k], float(seg_p[k]))
        metrics.audio_duration.labels("timeline").observe(tl.duration_s)
        metrics.inference.labels("timeline").observe(ms / 1e3)
        return TimelineOut(model_name=p.name, model_version=p.version, processing_ms=round(ms, 3), **tl.to_dict())

    @app.post(
        "/v1/admin/reload",
        response_model=ReloadOut,
        tags=["admin"],
        dependencies=guarded,
        responses={401: ERROR_RESPONSES[401], 409: {"model": ErrorOut, "description": "load failed; old model kept"}},
    )
    async def admin_reload(request: Request) -> Any:
        """Reload the model from its source now. In-flight requests finish on the old model; a failed load keeps
        it (409, with the error)."""
        result: ReloadResult = await anyio.to_thread.run_sync(holder.reload)
        if not result.ok:
            raise ApiError(
                409,
                "reload_failed",
                f"reload failed, still serving {result.version}: {result.error}",
                details=result.to_dict(),
            )
        return ReloadOut(**{k: v for k, v in result.to_dict().items() if k in ReloadOut.model_fields})

    streams_open = [0]

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket) -> None:
        """Real-time emotion of a live audio stream (protocol: :mod:`ser.serve.stream`). Each message is handled in
        the inference thread pool, one at a time per stream; a client that disconnects at any point just ends it."""
        from ser.serve.stream import CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_TRY_AGAIN, StreamLimits, StreamSession

        await websocket.accept()

        async def send_all(messages: list[dict[str, Any]]) -> None:
            for m in messages:
                metrics.stream_messages.labels(m["type"], m.get("code", "")).inc()
                if m["type"] == "partial":
                    metrics.partial_latency.observe(m["latency_ms"] / 1e3)
                elif m["type"] == "final":
                    metrics.observe_prediction("stream", m["label"], m["probabilities"][m["label"]])
                await websocket.send_json(m)

        async def refuse(code: str, message: str, close_code: int) -> None:
            await send_all([{"type": "error", "code": code, "message": message}])
            await websocket.close(close_code, code)

        end = "disconnect"
        try:
            key = websocket.headers.get("x-api-key") or websocket.query_params.get("api_key")
            if not key_ok(key):
                metrics.streams.labels("unauthorized").inc()
                await refuse("unauthorized", "missing or invalid API key (X-API-Key header or ?api_key=)", CLOSE_POLICY)
                return
            if streams_open[0] >= settings.max_streams:
                metrics.streams.labels("too_many_streams").inc()
                msg = f"{streams_open[0]} streams open (at most {settings.max_streams}); try again later"
                await refuse("too_many_streams", msg, CLOSE_TRY_AGAIN)
                return
        except (WebSocketDisconnect, OSError):
            return
        session = StreamSession(holder.get, StreamLimits(max_stream_s=settings.max_stream_s))
        limiter = limiter_of(websocket.app)
        streams_open[0] += 1
        metrics.streams_active.inc()
        try:
            while session.close is None:
                try:
                    with anyio.fail_after(settings.stream_idle_timeout_s):
                        message = await websocket.receive()
                except TimeoutError:
                    end = "idle_timeout"
                    msg = f"no message for {settings.stream_idle_timeout_s:g} s"
                    await refuse("idle_timeout", msg, CLOSE_POLICY)
                    return
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes") if message.get("bytes") is not None else message.get("text")
                if data is None:
                    continue
                try:
                    if isinstance(data, bytes) and session.started:
                        # Audio: buffer + VAD here (microseconds); only a due model call goes to a worker thread,
                        # about twice a second per stream instead of every 20 ms frame.
                        t0 = time.perf_counter()
                        out = session.ingest_frame(data)
                        if session.work_pending():
                            out += await anyio.to_thread.run_sync(session.advance, t0, limiter=limiter)
                        else:
                            out += session.advance(t0)
                    else:
                        out = await anyio.to_thread.run_sync(session.handle, data, limiter=limiter)
                except Exception as exc:  # a bug, never a bad input: report it, close, keep serving
                    log.exception("stream session failed")
                    end = "internal"
                    await refuse("internal", f"internal error ({type(exc).__name__})", CLOSE_INTERNAL)
                    return
                await send_all(out)
            end = "done" if session.close.code == 1000 else session.close.reason.replace(" ", "_")
            await websocket.close(session.close.code, session.close.reason)
        except (WebSocketDisconnect, OSError):  # the client went away (any moment, even mid-send)
            pass
        finally:
            streams_open[0] -= 1
            metrics.streams_active.dec()
            metrics.streams.labels(end).inc()

    @app.get("/", include_in_schema=False)
    async def demo_page() -> FileResponse:
        """The browser demo."""
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> FileResponse:
        """The demo's script and style sheet (a flat folder: no sub-paths, nothing outside it)."""
        path = STATIC_DIR / name
        if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
            raise ApiError(404, "not_found", f"no static file {name!r}")
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "text format"}},
    )
    async def prometheus() -> Response:
        metrics.refresh_model(holder)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _package_version() -> str:
    import ser

    return ser.__version__


def one_blas_thread_per_request() -> None:
    """Limit BLAS / OpenMP pools to one thread for the whole process. A server runs one request per core already;
    letting the log-mel's matrix products spawn a thread per core on top oversubscribes the cores (about 2× slower
    per clip under load, measured by benchmarks/serve.py). Only server entry points call this."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return
    threadpool_limits(limits=1)


def app_from_env() -> FastAPI:
    """``uvicorn --factory ser.serve.app:app_from_env``: settings from ``SER_*`` variables."""
    one_blas_thread_per_request()
    return create_app(Settings.from_env())
