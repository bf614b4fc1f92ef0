"""What the routes share, read from ``app.state`` (set by :func:`ser.serve.app.create_app`), so routers need no
closures: the settings, the model holder and its current predictor, the metrics, the key checks (API, admin,
metrics; :mod:`ser.serve.security`) and the thread-pool runner."""

from __future__ import annotations

import functools
import time
from typing import Any

import anyio
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from ser.errors import Cancelled
from ser.serve.engine import ModelHolder, ModelNotReady
from ser.serve.errors import ApiError
from ser.serve.metrics import Metrics
from ser.serve.security import KEY_HEADER, Auth, KeyRing, key_in_url, presented_key
from ser.serve.settings import Settings

key_header = APIKeyHeader(
    name=KEY_HEADER, auto_error=False, description="an API key (also as Authorization: Bearer); when keys are set"
)


def settings_of(conn: HTTPConnection) -> Settings:
    return conn.app.state.settings


def holder_of(conn: HTTPConnection) -> ModelHolder:
    return conn.app.state.holder


def metrics_of(conn: HTTPConnection) -> Metrics:
    return conn.app.state.metrics


def predictor(conn: HTTPConnection) -> Any:
    """The loaded predictor; :class:`ApiError` 503 ``not_ready`` while there is none."""
    try:
        return holder_of(conn).get()
    except ModelNotReady as exc:
        raise ApiError(503, "not_ready", str(exc)) from None


def auth_of(conn: HTTPConnection) -> Auth:
    return conn.app.state.auth


def check_key(conn: HTTPConnection, ring: KeyRing, what: str = "API", key: str | None = None) -> str:
    """The name of the valid key ``conn`` carries (``key``, else its ``X-API-Key`` or ``Authorization: Bearer``
    header); :class:`ApiError` 401 ``unauthorized`` without one, or with a key in the URL. Counted in the metrics by
    key name and result."""
    metrics = metrics_of(conn)
    if key_in_url(conn.query_params):
        metrics.auth.labels("", "key_in_url").inc()
        raise ApiError(
            401, "unauthorized", f"{what} keys are accepted in the {KEY_HEADER} header only, never in the URL"
        )
    key = key or presented_key(conn.headers)
    name = ring.match(key)
    if name is None:
        metrics.auth.labels("", "missing" if not key else "invalid").inc()
        raise ApiError(401, "unauthorized", f"missing or invalid {KEY_HEADER} ({what} key)")
    metrics.auth.labels(name, "ok").inc()
    conn.scope.setdefault("state", {})["key_name"] = name
    return name


async def require_key(request: Request, key: str | None = Depends(key_header)) -> None:
    """Dependency of the guarded routes: 401 ``unauthorized`` without a valid API key when keys are required
    (``key`` is for the OpenAPI document; the check reads the headers itself)."""
    if auth_of(request).mode == "key":
        check_key(request, auth_of(request).api)


async def require_admin(request: Request, key: str | None = Depends(key_header)) -> None:
    """Dependency of the admin routes: a valid admin key (the API keys when no admin keys are set); 404 when
    neither is configured (admin off: nothing to forge a request against)."""
    ring = auth_of(request).admin_ring
    if ring is None:
        raise ApiError(404, "not_found", "Not Found")
    check_key(request, ring, "admin")


async def require_metrics(request: Request, key: str | None = Depends(key_header)) -> None:
    """Dependency of ``/metrics``: open on the metrics port (``metrics_port``), else as the guarded routes."""
    if request.scope.get("ser.metrics_port"):
        return
    await require_key(request, key)


GUARDED = [Depends(require_key)]
"""``dependencies=`` of the routes that need the API key."""
ADMIN = [Depends(require_admin)]
"""``dependencies=`` of the admin routes."""


def limiter_of(app: Any) -> anyio.CapacityLimiter:
    """The app's inference thread limiter (``inference_workers`` threads), made here when used without lifespan."""
    limiter = getattr(app.state, "limiter", None)
    if limiter is None:  # app used without its lifespan
        limiter = app.state.limiter = anyio.CapacityLimiter(app.state.settings.inference_workers)
    return limiter


async def in_thread(request: Request, fn: Any, *args: Any) -> Any:
    """``fn(*args, should_stop=...)`` in the inference thread pool, within ``request_timeout_s`` (else
    :class:`ApiError` 504).

    At the deadline ``should_stop()`` turns true: the decoder checks it before each block and the model calls
    before each inference, so timed-out work stops within one block or one model call (raising
    :class:`ser.errors.Cancelled`). The request keeps its slot of the thread limiter until its thread has
    returned (the thread is waited for, never abandoned), so work that is still running is always counted by the
    admission limit (``inference_workers``)."""
    settings = settings_of(request)
    limiter = limiter_of(request.app)
    deadline = time.monotonic() + settings.request_timeout_s

    def should_stop() -> bool:
        return time.monotonic() >= deadline

    timeout = ApiError(504, "timeout", f"decoding + inference took longer than {settings.request_timeout_s:g} s")
    try:
        with anyio.fail_after(settings.request_timeout_s):  # while waiting for a slot of the limiter
            result = await anyio.to_thread.run_sync(
                functools.partial(fn, *args, should_stop=should_stop), abandon_on_cancel=False, limiter=limiter
            )
    except (TimeoutError, Cancelled):
        raise timeout from None
    if should_stop():  # finished, but after the deadline (a model call that ran past it)
        raise timeout
    return result
