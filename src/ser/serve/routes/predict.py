"""Emotion of uploaded clips: ``POST /v1/predict`` (one) and ``POST /v1/predict/batch`` (several).

With a canary (``shadow_mode = canary``, :class:`ser.serve.monitoring.CanaryRunner`) a request may be answered by
the canary model (sticky per ``X-Client-Id`` header, else random; the answer's ``model_version`` says which
model): :func:`answer` routes it, counts each side's model failures for the rollback rule, and lets the champion
answer when the canary fails in the model.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from fastapi import APIRouter, Request

from ser.monitor.canary import CANARY, CHAMPION
from ser.serve.deps import GUARDED, in_thread, metrics_of, predictor, settings_of
from ser.serve.errors import ERROR_RESPONSES, ApiError
from ser.serve.metrics import Metrics
from ser.serve.monitoring import ServiceMonitor, monitor_of
from ser.serve.schemas import BATCH_BODY, UPLOAD_BODY, BatchItem, BatchOut, PredictionOut
from ser.serve.uploads import decode_limits, predict_bytes, predict_many, read_uploads

router = APIRouter()
log = logging.getLogger("ser.serve")


def _prediction_out(fields: dict[str, Any], predictor: Any, filename: str | None) -> PredictionOut:
    return PredictionOut(**fields, model_name=predictor.name, filename=filename)


def observe_answer(metrics: Metrics, endpoint: str, out: PredictionOut) -> None:
    """Count one answer in the metrics: its label and confidence, or why it has none; its audio duration."""
    if out.label is not None and out.confidence is not None:
        metrics.observe_prediction(endpoint, out.label, out.confidence, out.model_version)
    else:
        metrics.no_speech.labels(endpoint, out.reason or "no_speech").inc()
    metrics.audio_duration.labels(endpoint).observe(out.duration_s)


CLIENT_ID_HEADER = "x-client-id"
"""An opaque client id that keeps a client on one side of a canary (hashed for the draw, never logged)."""


async def _counted(request: Request, mon: ServiceMonitor | None, side: str, fn: Any, p: Any, *args: Any) -> Any:
    """``fn(p, *args)`` in the inference pool; counts the outcome for ``side`` (a failure in the model or a time-out
    is an error; a 4xx is the input's fault and not counted)."""
    try:
        result = await in_thread(request, fn, p, *args)
    except ApiError as exc:
        if mon is not None and exc.status >= 500:
            mon.served(side, str(p.version), False)
        raise
    except Exception:
        if mon is not None:
            mon.served(side, str(p.version), False)
        raise
    if mon is not None:
        mon.served(side, str(p.version), True)
    return result


async def answer(request: Request, champion: Any, fn: Any, *args: Any) -> tuple[Any, Any]:
    """``(predictor that answered, fn(predictor, *args))``: the canary's when this request is drawn for it, else the
    champion's; a canary that fails in the model is counted and the champion answers instead."""
    mon = monitor_of(request.app)
    canary = mon.canary_pick(request.headers.get(CLIENT_ID_HEADER)) if mon is not None else None
    if canary is not None:
        try:
            return canary, await _counted(request, mon, CANARY, fn, canary, *args)
        except ApiError:
            raise  # bad input (4xx), or a time-out (504: no time left for a second model)
        except Exception:
            log.exception("canary v%s failed on a request; the champion answers it", canary.version)
    return champion, await _counted(request, mon, CHAMPION, fn, champion, *args)


@router.post(
    "/v1/predict",
    response_model=PredictionOut,
    tags=["predict"],
    dependencies=GUARDED,
    responses=ERROR_RESPONSES,
    openapi_extra=UPLOAD_BODY,
)
async def predict(request: Request) -> PredictionOut:
    """Emotion of one clip: multipart field ``file`` or a raw ``audio/*`` body (any format libsndfile reads)."""
    settings, metrics = settings_of(request), metrics_of(request)
    p = predictor(request)
    part = (await read_uploads(request, settings, batch=False))[0]
    run = functools.partial(
        predict_bytes, monitor=monitor_of(request.app), client_name=part.filename, abstain_below=settings.abstain_below
    )
    p, fields = await answer(request, p, run, part.data, decode_limits(settings, settings.max_audio_s))
    out = _prediction_out(fields, p, part.filename)
    observe_answer(metrics, "predict", out)
    metrics.inference.labels("predict").observe(out.processing_ms / 1e3)
    return out


@router.post(
    "/v1/predict/batch",
    response_model=BatchOut,
    tags=["predict"],
    dependencies=GUARDED,
    responses=ERROR_RESPONSES,
    openapi_extra=BATCH_BODY,
)
async def predict_batch(request: Request) -> BatchOut:
    """Emotion of several clips (multipart ``files``); a bad file gets its own error, the others still run."""
    settings, metrics = settings_of(request), metrics_of(request)
    p = predictor(request)
    parts = await read_uploads(request, settings, batch=True)
    if len(parts) > settings.max_batch_files:
        raise ApiError(422, "too_many_files", f"{len(parts)} files; at most {settings.max_batch_files} per batch")
    t0 = time.perf_counter()
    limits = decode_limits(settings, settings.max_audio_s)
    run = functools.partial(predict_many, monitor=monitor_of(request.app), abstain_below=settings.abstain_below)
    p, done = await answer(request, p, run, parts, settings.max_upload_bytes, limits)
    metrics.inference.labels("batch").observe(time.perf_counter() - t0)
    items = []
    for part, res in done:
        if isinstance(res, ApiError):
            items.append(BatchItem(filename=part.filename, ok=False, error=res.body(), status=res.status))
            continue
        out = _prediction_out(res, p, part.filename)
        observe_answer(metrics, "batch", out)
        items.append(BatchItem(filename=part.filename, ok=True, result=out))
    n_ok = sum(i.ok for i in items)
    return BatchOut(model_version=p.version, n_ok=n_ok, n_failed=len(items) - n_ok, results=items)
