"""Administration: reload the model from its source."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request

from ser.serve.deps import GUARDED, holder_of
from ser.serve.engine import ReloadResult
from ser.serve.errors import ERROR_RESPONSES, ApiError
from ser.serve.schemas import ErrorOut, ReloadOut

router = APIRouter()


@router.post(
    "/v1/admin/reload",
    response_model=ReloadOut,
    tags=["admin"],
    dependencies=GUARDED,
    responses={401: ERROR_RESPONSES[401], 409: {"model": ErrorOut, "description": "load failed; old model kept"}},
)
async def admin_reload(request: Request) -> Any:
    """Reload the model from its source now. In-flight requests finish on the old model; a failed load keeps
    it (409, with the error)."""
    result: ReloadResult = await anyio.to_thread.run_sync(holder_of(request).reload)
    if not result.ok:
        raise ApiError(
            409,
            "reload_failed",
            f"reload failed, still serving {result.version}: {result.error}",
            details=result.to_dict(),
        )
    return ReloadOut(**{k: v for k, v in result.to_dict().items() if k in ReloadOut.model_fields})
