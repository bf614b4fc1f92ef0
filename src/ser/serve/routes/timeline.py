"""Emotion timeline of a long recording: ``POST /v1/timeline`` (the analysis is :mod:`ser.serve.timeline`)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from fastapi import APIRouter, Query, Request

from ser.serve.deps import GUARDED, in_thread, metrics_of, predictor, settings_of
from ser.serve.errors import ERROR_RESPONSES
from ser.serve.schemas import UPLOAD_BODY, TimelineOut
from ser.serve.timeline import TimelineConfig
from ser.serve.uploads import read_uploads, timeline_bytes
from ser.vad import VadConfig

router = APIRouter()


@router.post(
    "/v1/timeline",
    response_model=TimelineOut,
    tags=["predict"],
    dependencies=GUARDED,
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
    cfg = TimelineConfig(
        vad=VadConfig(aggressiveness=aggressiveness, max_segment_s=max_segment_s),
        step_s=step_s,
        smoothing=smoothing,
        tau_s=tau_s,
        peak_label=peak_label,
        peak_threshold=peak_threshold,
    )
    settings, metrics = settings_of(request), metrics_of(request)
    p = predictor(request)
    part = (await read_uploads(request, settings, batch=False))[0]
    tl, ms = await in_thread(request, timeline_bytes, p, part.data, settings.max_timeline_audio_s, cfg)
    for seg_p in tl.probs:
        k = int(np.argmax(seg_p))
        metrics.observe_prediction("timeline", tl.labels[k], float(seg_p[k]))
    metrics.audio_duration.labels("timeline").observe(tl.duration_s)
    metrics.inference.labels("timeline").observe(ms / 1e3)
    return TimelineOut(model_name=p.name, model_version=p.version, processing_ms=round(ms, 3), **tl.to_dict())
