"""The HTTP API: FastAPI app factory :func:`create_app` over a hot-reloadable exported model.

Routes (who may call which, and how keys, the auth-off mode, the metrics port and the headers work:
:mod:`ser.serve.security` and the README's security section; ``/healthz`` and ``/readyz`` are always open):

=========================== =====================================================================================
``POST /v1/predict``        one clip: multipart field ``file``, or the raw body with an ``audio/*`` or
                            ``application/octet-stream`` content type → label, probabilities, timing, version
``POST /v1/predict/batch``  several multipart ``files`` → one result or one error per file
``POST /v1/timeline``       a long recording → voiced segments, smoothed emotion timeline, summary
``POST /v1/feedback``       the true label of an answer (its ``prediction_id``) → the feedback log
``GET /v1/model``           name, version, labels, metrics of the served model (no path, no code revision)
``POST /v1/admin/reload``   reload the model from its source (a failed load keeps the old one: 409); admin key
``GET /healthz``            the process answers; ``GET /readyz``: 503 until a model is loaded
``GET /metrics``            Prometheus text format (a registry per app); on ``metrics_port`` only when that is set
``WS /v1/stream``           real-time stream: audio frames in, partial and per-utterance emotions out (protocol in
                            :mod:`ser.serve.stream`; the key as ``X-API-Key`` header or ``key.<base64url>``
                            subprotocol beside ``ser.v1``, never in the URL)
``GET /``                   the browser demo (microphone streaming, file timeline; files under ``static/``)
``GET /docs``               Swagger UI from local assets; ``GET /openapi.json`` the OpenAPI document
=========================== =====================================================================================

Every error is JSON ``{"error": {"code": ..., "message": ...}}`` with a 4xx status for a bad request: empty
upload 400 ``empty_audio``; not decodable (corrupt, text, unsupported codec) 422 ``undecodable_audio``; NaN or
too-short audio 422 ``invalid_audio``; longer than allowed 422 ``audio_too_long``; more bytes than allowed 413
``too_large``; a content type that is neither multipart nor audio 415 ``unsupported_media_type``; no file 422
``missing_file``; bad key 401 ``unauthorized``; inference slower than the timeout 504 ``timeout``; no model 503
``not_ready``. Resource bounds (:mod:`ser.serve.uploads`): a body not received within ``body_timeout_s`` 408
``body_timeout``; a header over the sample-rate, channel or decoded-size bounds 422 ``audio_too_large`` (checked
before decoding; decoding then runs in blocks); two files on ``/v1/predict`` 422 ``too_many_files``; a timeline
step under ``min_timeline_step_s`` 422 ``step_too_small`` or over ``max_timeline_points`` points 422
``too_many_points``; a client gone mid-upload is counted as status 499. A clip without speech is a 200 with
``speech: false`` and no label (:mod:`ser.serve.speech`). Decoding and inference run in a thread pool (bounded by
``inference_workers``; a timed-out request keeps its slot until its work has stopped). Uploads are held in memory
only (the multipart body is parsed in memory, never spooled to disk) and never stored or logged.

Layout: settings :mod:`ser.serve.settings`; response models :mod:`ser.serve.schemas`; errors and their handlers
:mod:`ser.serve.errors`; uploads, decoding and inference helpers :mod:`ser.serve.uploads`; Prometheus metrics
:mod:`ser.serve.metrics`; what routes share (``app.state``, API key, thread pool) :mod:`ser.serve.deps`; the routes
by concern :mod:`ser.serve.routes`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from ser.serve.engine import ModelHolder
from ser.serve.errors import install_error_handlers
from ser.serve.metrics import Metrics, MetricsMiddleware
from ser.serve.monitoring import ServiceMonitor
from ser.serve.routes import admin, demo, docs, feedback, ops, predict, stream, timeline, vertex
from ser.serve.security import Auth, MetricsPortGate, SecurityHeadersMiddleware, install_log_filters
from ser.serve.settings import Settings

log = logging.getLogger("ser.serve")

# Settings is re-exported: tests/conftest.py and benchmarks/serve.py import it from here.
__all__ = ["Settings", "app_from_env", "create_app", "one_blas_thread_per_request"]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start-up: the inference thread limiter, the monitoring (prediction log, live gauges, shadow model), the
    model load (in a background thread, unless already loaded) and the source poll; shutdown: stop polling, close
    the monitoring (the logs are flushed)."""
    settings: Settings = app.state.settings
    holder: ModelHolder = app.state.holder
    auth: Auth = app.state.auth
    install_log_filters()  # again: the server may have configured its logging after create_app
    (log.warning if auth.mode == "open" else log.info)("%s", auth.describe())
    app.state.limiter = anyio.CapacityLimiter(settings.inference_workers)
    monitor: ServiceMonitor = app.state.monitor
    monitor.start()  # the prediction log, the live gauges, the second model (before the first load finishes)
    app.state.metrics.refresh_model(holder)  # then again on every (re)load (a listener)
    if not holder.ready:
        threading.Thread(target=holder.reload, name="ser-model-load", daemon=True).start()
    if settings.poll_s > 0:  # by default on for a workdir (follow the champion), off for a model folder
        holder.start_polling(settings.poll_s)
    try:
        yield
    finally:
        holder.stop_polling()
        monitor.close()  # flushes the prediction and feedback logs


def create_app(settings: Settings | None = None, *, holder: ModelHolder | None = None) -> FastAPI:
    """The API over ``settings``' model source (or a given, possibly already loaded, ``holder``).

    The model loads in a background thread at start-up (``/readyz`` is 503 until then); the source is polled every
    :attr:`Settings.poll_s` seconds (by default 10 s for a workdir's registry, off for a model folder) and the
    model hot-reloaded when it changes.
    """
    settings = settings or Settings()
    if holder is None:
        holder = ModelHolder(
            settings.model_dir,
            workdir=settings.workdir if settings.model_dir is None else None,
            ref=settings.model_ref,
            threads=settings.threads,
        )
    metrics = Metrics()
    holder.listeners.append(lambda _: metrics.refresh_model(holder))  # every process's own gauges, not only at scrape
    holder.listeners.append(metrics.on_reload)

    app = FastAPI(
        title="ser: speech emotion recognition",
        version=_package_version(),
        description=__doc__.split("\n\n")[0],
        lifespan=lifespan,
        docs_url=None,  # /docs and /openapi.json are routes.docs (local assets, behind the key)
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings, app.state.holder, app.state.metrics = settings, holder, metrics
    app.state.monitor = ServiceMonitor(settings, holder, metrics)
    app.state.auth = Auth.from_settings(settings)
    app.state.streams_open = 0
    install_log_filters()
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type", "X-Filename"],
        )
    if settings.metrics_port is not None:
        app.add_middleware(MetricsPortGate, metrics_port=settings.metrics_port)
    app.add_middleware(SecurityHeadersMiddleware)  # last added, outermost: on every answer
    # The WebSocket route goes on the app itself, not through an included router, and first: FastAPI >= 0.137 keeps
    # an included router's routes out of `app.routes` (where benchmarks/serve.py and tests/deploy/test_ops.py look
    # for it) and builds them on an app's first request, which a stream's connection then need not wait for.
    app.add_api_websocket_route(stream.PATH, stream.stream)
    modules = (ops, predict, timeline, feedback, admin, demo, docs)
    for routes in modules:
        app.include_router(routes.router)
    taken = {stream.PATH} | {getattr(r, "path", "") for m in modules for r in m.router.routes}
    app.include_router(vertex.router(settings, taken))  # Vertex AI's routes when set (AIP_PREDICT_ROUTE, ...)
    return app


def _package_version() -> str:
    """The package's public version (a local ``+git...`` part, a code revision, is not shown)."""
    import ser

    return ser.__version__.split("+", 1)[0]


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
