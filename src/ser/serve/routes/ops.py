"""Operations: liveness and readiness (open: probes), the served model (API key) and the Prometheus metrics (API key,
or open on the separate ``metrics_port`` only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from ser.serve.deps import GUARDED, holder_of, metrics_of, predictor, require_metrics
from ser.serve.errors import ERROR_RESPONSES
from ser.serve.schemas import HealthOut, ModelInfo, ReadyOut

router = APIRouter()


@router.get("/healthz", response_model=HealthOut, tags=["ops"], summary="The process answers")
async def healthz() -> HealthOut:
    return HealthOut()


@router.get(
    "/readyz",
    response_model=ReadyOut,
    tags=["ops"],
    summary="Ready when a model is loaded",
    responses={503: ERROR_RESPONSES[503]},
)
async def readyz(request: Request) -> ReadyOut:
    p = predictor(request)
    return ReadyOut(model_name=p.name, model_version=p.version)


@router.get(
    "/v1/model",
    response_model=ModelInfo,
    tags=["model"],
    dependencies=GUARDED,
    responses={401: ERROR_RESPONSES[401], 503: ERROR_RESPONSES[503]},
)
async def model_info(request: Request) -> ModelInfo:
    """The served model: name, version, labels (class order), evaluation metrics from its metadata (no path, no
    code revision)."""
    p = predictor(request)
    holder = holder_of(request)
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
        loaded_at=holder.loaded_at,
    )


@router.get(
    "/metrics",
    tags=["ops"],
    summary="Prometheus metrics",
    response_class=Response,
    dependencies=[Depends(require_metrics)],
    responses={200: {"content": {"text/plain": {}}, "description": "text format"}, 401: ERROR_RESPONSES[401]},
)
async def prometheus(request: Request) -> Response:
    metrics = metrics_of(request)
    metrics.refresh_model(holder_of(request))
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)  # every process's, with several
