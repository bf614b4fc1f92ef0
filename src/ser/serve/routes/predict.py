"""Emotion of uploaded clips: ``POST /v1/predict`` (one) and ``POST /v1/predict/batch`` (several)."""

from __future__ import annotations

import functools
import time
from typing import Any

from fastapi import APIRouter, Request

from ser.serve.deps import GUARDED, in_thread, metrics_of, predictor, settings_of
from ser.serve.errors import ERROR_RESPONSES, ApiError
from ser.serve.metrics import Metrics
from ser.serve.monitoring import monitor_of
from ser.serve.schemas import BATCH_BODY, UPLOAD_BODY, BatchItem, BatchOut, PredictionOut
from ser.serve.uploads import decode_limits, predict_bytes, predict_many, read_uploads

router = APIRouter()


def _prediction_out(fields: dict[str, Any], predictor: Any, filename: str | None) -> PredictionOut:
    return PredictionOut(**fields, model_name=predictor.name, filename=filename)


def _observe(metrics: Metrics, endpoint: str, out: PredictionOut) -> None:
    if out.label is not None and out.confidence is not None:
        metrics.observe_prediction(endpoint, out.label, out.confidence, out.model_version)
    else:
        metrics.no_speech.labels(endpoint, out.reason or "no_speech").inc()
    metrics.audio_duration.labels(endpoint).observe(out.duration_s)


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
    fields = await in_thread(request, run, p, part.data, decode_limits(settings, settings.max_audio_s))
    out = _prediction_out(fields, p, part.filename)
    _observe(metrics, "predict", out)
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
    done = await in_thread(request, run, p, parts, settings.max_upload_bytes, limits)
    metrics.inference.labels("batch").observe(time.perf_counter() - t0)
    items = []
    for part, res in done:
        if isinstance(res, ApiError):
            items.append(BatchItem(filename=part.filename, ok=False, error=res.body(), status=res.status))
            continue
        out = _prediction_out(res, p, part.filename)
        _observe(metrics, "batch", out)
        items.append(BatchItem(filename=part.filename, ok=True, result=out))
    n_ok = sum(i.ok for i in items)
    return BatchOut(model_version=p.version, n_ok=n_ok, n_failed=len(items) - n_ok, results=items)
