"""Administration: reload the model from its source. Always behind a key (the admin keys, else the API keys) and
off (404) without one, so that no page in a browser can make an open server act (CSRF)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request

from ser.serve.deps import ADMIN, holder_of
from ser.serve.engine import ReloadResult
from ser.serve.errors import ERROR_RESPONSES, ApiError
from ser.serve.schemas import ErrorOut, ReloadOut

router = APIRouter()


@router.post(
    "/v1/admin/reload",
    response_model=ReloadOut,
    tags=["admin"],
    dependencies=ADMIN,
    responses={
        401: ERROR_RESPONSES[401],
        404: {"model": ErrorOut, "description": "admin off: no admin or API key configured"},
        409: {"model": ErrorOut, "description": "load failed; old model kept"},
    },
)
async def admin_reload(request: Request) -> Any:
    """Reload the model from its source now (an admin key, else an API key, in ``X-API-Key``; off without keys).
    In-flight requests finish on the old model; a failed load keeps it (409, with the error, paths redacted)."""
    holder = holder_of(request)
    result: ReloadResult = await anyio.to_thread.run_sync(holder.reload)
    if not result.ok:
        error = holder.redact(result.error or "")
        details = {k: v for k, v in result.to_dict().items() if k in ReloadOut.model_fields} | {"error": error}
        raise ApiError(409, "reload_failed", f"reload failed, still serving {result.version}: {error}", details)
    return ReloadOut(**{k: v for k, v in result.to_dict().items() if k in ReloadOut.model_fields})
