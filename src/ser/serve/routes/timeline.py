"""Emotion timeline of a long recording: ``POST /v1/timeline`` (the analysis is :mod:`ser.timeline`)."""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ser.errors import ConfigError
from ser.serve.deps import GUARDED, in_thread, metrics_of, predictor, settings_of
from ser.serve.errors import ERROR_RESPONSES, ApiError
from ser.serve.monitoring import monitor_of
from ser.serve.schemas import UPLOAD_BODY, TimelineOut, TimelineSplitOut
from ser.serve.uploads import decode_limits, read_uploads, timeline_bytes
from ser.timeline import TimelineConfig, parse_channel_names
from ser.vad import VadConfig

router = APIRouter()


@router.post(
    "/v1/timeline",
    response_model=TimelineOut | TimelineSplitOut,
    tags=["predict"],
    dependencies=GUARDED,
    responses=ERROR_RESPONSES,
    openapi_extra=UPLOAD_BODY,
)
async def timeline(
    request: Request,
    step_s: float = Query(0.5, gt=0, le=60, description="grid step, seconds (at least SER_MIN_TIMELINE_STEP_S, 0.1)"),
    smoothing: Literal["ema", "median", "none"] = Query("ema"),
    tau_s: float = Query(1.0, gt=0, le=600, description="EMA time constant, seconds"),
    aggressiveness: int = Query(2, ge=0, le=3, description="webrtcvad mode"),
    max_segment_s: float = Query(4.0, gt=0.25, le=30, description="longer voiced stretches are split"),
    peak_label: str = Query("angry", max_length=64),
    peak_threshold: float = Query(0.5, ge=0, le=1),
    channels: Literal["mix", "split"] = Query(
        "mix", description="mix: one timeline of the channels averaged; split: one timeline per channel (a stereo call)"
    ),
    channel_names: str | None = Query(
        None,
        max_length=600,
        description="with channels=split: comma-separated names, one per channel (e.g. agent,customer); "
        "default ch0, ch1, ...",
    ),
) -> Response:
    """Emotion timeline of a long recording: voice-activity segments, each classified; probabilities on a
    smoothed grid; share of voiced time per emotion, dominant emotion and peaks of ``peak_label``. The grid holds
    at most ``SER_MAX_TIMELINE_POINTS`` points (422 ``too_many_points`` otherwise; checked before decoding).

    ``channels=split`` times each channel on its own (a stereo call: agent and customer) and answers
    ``TimelineSplitOut`` (one timeline per channel, named by ``channel_names``); a mono upload, or one with another
    number of channels than names, is a 422 ``bad_channels`` (read from the header, before decoding)."""
    settings, metrics = settings_of(request), metrics_of(request)
    if step_s < settings.min_timeline_step_s:
        raise ApiError(422, "step_too_small", f"step_s={step_s:g} s; at least {settings.min_timeline_step_s:g} s")
    try:
        names = parse_channel_names(channel_names)
    except ConfigError as exc:
        raise ApiError(422, "bad_channels", str(exc)) from None
    if names and channels != "split":
        raise ApiError(422, "bad_channels", "channel_names needs channels=split")
    cfg = TimelineConfig(
        vad=VadConfig(aggressiveness=aggressiveness, max_segment_s=max_segment_s),
        step_s=step_s,
        smoothing=smoothing,
        tau_s=tau_s,
        peak_label=peak_label,
        peak_threshold=peak_threshold,
    )
    p = predictor(request)
    part = (await read_uploads(request, settings, batch=False))[0]
    limits = decode_limits(settings, settings.max_timeline_audio_s)
    run = functools.partial(
        timeline_bytes,
        monitor=monitor_of(request.app),
        client_name=part.filename,
        channels=channels,
        channel_names=names,
    )
    answer = await in_thread(request, run, p, part.data, limits, cfg, settings.max_timeline_points)
    ms = answer.processing_ms
    for tl in answer.timelines:
        for seg_p in tl.probs:
            k = int(np.argmax(seg_p))
            metrics.observe_prediction("timeline", tl.labels[k], float(seg_p[k]), p.version)
    metrics.audio_duration.labels("timeline").observe(answer.timelines[0].duration_s)
    metrics.inference.labels("timeline").observe(ms / 1e3)
    # serialised in the worker thread: a large answer does not hold the event loop
    return Response(answer.body, media_type="application/json")
