"""What the routes share, read from ``app.state`` (set by :func:`ser.serve.app.create_app`), so routers need no
closures: the settings, the model holder and its current predictor, the metrics, the API-key check and the
thread-pool runner."""

from __future__ import annotations

import functools
import hmac
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
from ser.serve.settings import Settings

key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required when keys are configured")


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


def key_ok(settings: Settings, key: str | None) -> bool:
    """Is ``key`` one of the configured API keys (constant-time compare)? Always true when none are configured."""
    if not settings.api_keys:
        return True
    if not key:
        return False
    return any(hmac.compare_digest(key.encode(), k.encode()) for k in settings.api_keys)


async def require_key(request: Request, key: str | None = Depends(key_header)) -> None:
    """Dependency of the guarded routes: 401 ``unauthorized`` without a valid ``X-API-Key``."""
    if not key_ok(settings_of(request), key):
        raise ApiError(401, "unauthorized", "missing or invalid X-API-Key")


GUARDED = [Depends(require_key)]
"""``dependencies=`` of the routes that need the API key."""


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
