"""Vertex AI's custom-container contract: predictions at ``AIP_PREDICT_ROUTE`` and readiness at
``AIP_HEALTH_ROUTE`` (settings ``vertex_predict_route`` / ``vertex_health_route``; mounted only when set).

A request is ``{"instances": [{"b64": "<audio file, base64>"}, ...], "parameters": {...}?}`` (``b64`` is Vertex AI's
convention for binary data); the answer is ``{"predictions": [...]}``, one per instance in order, each the same
object ``POST /v1/predict`` answers for that file. The request is all or nothing: a bad instance (not base64, too
large, undecodable, ...) fails the request with the 4xx ``/v1/predict`` would give, its message naming the
instance (``instances[2]: ...``; answers already computed for earlier instances are in the prediction log, as their
ids were issued). Bounds: at most ``max_batch_files`` instances, each at most ``max_upload_bytes`` once decoded, all
together at most ``max_batch_bytes``; the JSON body at most their base64 size plus 64 KiB. Keys as the other predict
routes (``SER_AUTH=none`` behind Vertex AI's IAM); the health route is open, as ``/readyz``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ser.audio import DecodeLimits
from ser.serve.deps import GUARDED, in_thread, metrics_of, predictor, settings_of
from ser.serve.errors import ERROR_RESPONSES, ApiError
from ser.serve.monitoring import monitor_of
from ser.serve.routes import ops
from ser.serve.routes.predict import observe_answer
from ser.serve.schemas import PredictionOut, ReadyOut
from ser.serve.settings import Settings
from ser.serve.uploads import StopFlag, decode_limits, media_type, predict_bytes, read_body

JSON_SLACK = 64 * 1024
"""Bytes a request body may hold beyond its instances' base64 text (keys, brackets, parameters)."""
ENDPOINT = "vertex"
"""The ``endpoint`` label of this route's answers in the metrics."""


class VertexInstance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    b64: str = Field(description="an audio file (any format libsndfile reads), base64-encoded")


class VertexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[VertexInstance] = Field(min_length=1)
    parameters: dict[str, Any] | None = Field(None, description="accepted and ignored")


class VertexOut(BaseModel):
    predictions: list[PredictionOut] = Field(description="one per instance, in order: as POST /v1/predict answers")


VERTEX_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {
                        "instances": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["b64"],
                                "properties": {"b64": {"type": "string", "format": "byte"}},
                                "additionalProperties": False,
                            },
                        },
                        "parameters": {"type": "object"},
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
}


def body_limit(settings: Settings) -> int:
    """Largest request body: the base64 text of ``max_batch_bytes`` plus :data:`JSON_SLACK`."""
    return 4 * math.ceil(settings.max_batch_bytes / 3) + JSON_SLACK


def parse_request(body: bytes, settings: Settings) -> list[bytes]:
    """The audio bytes of each instance of a request body; :class:`ApiError` for a body that is not the contract's
    JSON (400 ``bad_json``, 422 ``invalid_request``), too many instances (422 ``too_many_instances``), an instance
    that is not base64 (400 ``bad_base64``) or more bytes than allowed (413 ``too_large``)."""
    try:
        req = VertexRequest.model_validate_json(body)
    except ValidationError as exc:
        errs = exc.errors()
        if errs and errs[0]["type"] == "json_invalid":
            raise ApiError(400, "bad_json", f"the body is not JSON: {errs[0]['msg']}") from None
        msg = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errs[:5])
        raise ApiError(422, "invalid_request", f'{msg} (expected {{"instances": [{{"b64": ...}}]}})') from None
    n = len(req.instances)
    if n > settings.max_batch_files:
        raise ApiError(422, "too_many_instances", f"{n} instances; at most {settings.max_batch_files} per request")
    blobs, total = [], 0
    for i, inst in enumerate(req.instances):
        try:
            data = base64.b64decode(inst.b64, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "bad_base64", f"instances[{i}].b64 is not base64") from None
        if len(data) > settings.max_upload_bytes:
            raise ApiError(
                413, "too_large", f"instances[{i}]: {len(data)} bytes exceeds the limit of {settings.max_upload_bytes}"
            )
        total += len(data)
        blobs.append(data)
    if total > settings.max_batch_bytes:
        raise ApiError(413, "too_large", f"{total} bytes of audio exceed the limit of {settings.max_batch_bytes}")
    return blobs


def predict_instances(
    predictor: Any, blobs: list[bytes], limits: DecodeLimits, should_stop: StopFlag = None, **kw: Any
) -> list[dict[str, Any]]:
    """:func:`ser.serve.uploads.predict_bytes` on each instance in turn (worker thread); the first bad one raises
    its :class:`ApiError`, its message prefixed with the instance."""
    out = []
    for i, data in enumerate(blobs):
        try:
            out.append(predict_bytes(predictor, data, limits, should_stop, **kw))
        except ApiError as exc:
            raise ApiError(exc.status, exc.code, f"instances[{i}]: {exc.message}", exc.details) from None
    return out


async def predict(request: Request) -> VertexOut:
    """Emotion of each instance (a base64 audio file): Vertex AI's prediction contract."""
    settings, metrics = settings_of(request), metrics_of(request)
    p = predictor(request)
    mime = media_type(request)
    if mime != "application/json":
        raise ApiError(415, "unsupported_media_type", f"content type {mime or 'none'!r}: use application/json")
    blobs = parse_request(await read_body(request, body_limit(settings), settings.body_timeout_s), settings)
    run = functools.partial(
        predict_instances, monitor=monitor_of(request.app), route=settings.vertex_predict_route or ENDPOINT
    )
    fields = await in_thread(request, run, p, blobs, decode_limits(settings, settings.max_audio_s))
    outs = [PredictionOut(**f, model_name=p.name, filename=None) for f in fields]
    for out in outs:
        observe_answer(metrics, ENDPOINT, out)
        metrics.inference.labels(ENDPOINT).observe(out.processing_ms / 1e3)
    return VertexOut(predictions=outs)


def router(settings: Settings, taken: set[str]) -> APIRouter:
    """The routes ``settings`` asks for (none when neither Vertex AI route is set). A route that is one of the
    service's own paths (``taken``) is refused with :class:`ValueError`: it would shadow, or be shadowed by, that
    route; a health route of ``/readyz`` is that route already and is not added twice."""
    r = APIRouter()
    predict_route, health_route = settings.vertex_predict_route, settings.vertex_health_route
    if predict_route in taken or (health_route in taken and health_route != "/readyz"):
        clash = predict_route if predict_route in taken else health_route
        raise ValueError(f"the Vertex AI route {clash} is already a route of the service: choose another")
    if predict_route:
        r.add_api_route(
            predict_route,
            predict,
            methods=["POST"],
            response_model=VertexOut,
            tags=["vertex"],
            summary="Vertex AI prediction: base64 audio instances",
            dependencies=GUARDED,
            responses=ERROR_RESPONSES,
            openapi_extra=VERTEX_BODY,
        )
    if health_route and health_route not in taken:
        r.add_api_route(
            health_route,
            ops.readyz,
            methods=["GET"],
            response_model=ReadyOut,
            tags=["vertex"],
            summary="Vertex AI health check: ready when a model is loaded",
            responses={503: ERROR_RESPONSES[503]},
        )
    return r
