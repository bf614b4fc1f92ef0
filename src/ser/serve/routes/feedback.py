"""Feedback: ``POST /v1/feedback`` ``{prediction_id, label, source?, group?}``, the true label of an answer this
service gave (:mod:`ser.monitor.feedback`). Behind the API key like the predict routes.

An id this service never issued (not among the ids this process issued, nor in the prediction log on disk) is 404
``unknown_prediction``; a malformed id or a label outside the served model's classes is 422 ``invalid_feedback``;
a body that is not the JSON object above is 422 ``invalid_request`` (a content type other than JSON 415). Accepted
feedback is 202 with the record: it is queued for the feedback log (``<log root>/feedback``, written in the
background like the predictions) and joined to its prediction at report time (``ser monitor report``), also when
the prediction itself is not flushed yet. It also feeds ``ser_live_uar`` / ``ser_live_feedback``."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from pydantic import ValidationError

from ser.monitor.feedback import FeedbackError
from ser.serve.deps import GUARDED, predictor, settings_of
from ser.serve.errors import ERROR_RESPONSES, ApiError
from ser.serve.monitoring import monitor_of
from ser.serve.schemas import FeedbackIn, FeedbackOut
from ser.serve.uploads import media_type, read_body

router = APIRouter()

MAX_FEEDBACK_BYTES = 16 * 1024
"""Largest feedback body (413 beyond)."""

FEEDBACK_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": FeedbackIn.model_json_schema()}},
    }
}


RESPONSES: dict[int | str, dict[str, Any]] = {
    **{s: ERROR_RESPONSES[s] for s in (401, 413, 415, 503)},
    404: {**ERROR_RESPONSES[401], "description": "a prediction_id this service never issued (or purged)"},
    422: {**ERROR_RESPONSES[422], "description": "malformed body or id, or a label the model does not have"},
}


@router.post(
    "/v1/feedback",
    response_model=FeedbackOut,
    status_code=202,
    tags=["monitoring"],
    dependencies=GUARDED,
    responses=RESPONSES,
    openapi_extra=FEEDBACK_BODY,
)
async def feedback(request: Request) -> FeedbackOut:
    """The true label of an answer (its ``prediction_id``): stored in the feedback log and joined to the answer by
    the monitoring report (live accuracy)."""
    mime = media_type(request)
    if mime != "application/json":
        raise ApiError(415, "unsupported_media_type", f"content type {mime or 'none'!r}: send application/json")
    body = await read_body(request, MAX_FEEDBACK_BYTES, settings_of(request).body_timeout_s)
    try:
        fb = FeedbackIn.model_validate_json(body)
    except ValidationError as exc:
        errs = exc.errors()
        msg = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg')}" for e in errs[:5])
        raise ApiError(422, "invalid_request", msg or "invalid feedback body") from None
    p = predictor(request)
    monitor = monitor_of(request.app)
    if monitor is None:
        raise ApiError(503, "not_ready", "monitoring is not running")
    try:  # may read the log on disk (ids of an earlier process): in a thread
        rec, stored = await anyio.to_thread.run_sync(
            monitor.feedback, fb.prediction_id, fb.label, list(p.labels), fb.source, fb.group
        )
    except FeedbackError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    return FeedbackOut(
        prediction_id=rec.prediction_id,
        label=rec.label,
        source=rec.source,
        group=rec.group,
        ts=rec.ts.isoformat(timespec="milliseconds"),
        stored=stored,
    )
