"""The API's documentation: ``GET /openapi.json`` (behind the API key when keys are required) and ``GET /docs``,
Swagger UI served from this server (its assets come with the ``fastapi-offline`` package: no CDN, so the page
works offline and under a strict Content-Security-Policy). The ``/docs`` page itself is an empty shell, open like
the demo page: its script asks for the key when the document answers 401 and sends it as ``X-API-Key`` (also on
"Try it out"). ReDoc is not served. ``docs=False`` (``SER_DOCS=0``) turns all of it off (404)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse

from ser.serve.deps import GUARDED, settings_of
from ser.serve.errors import ApiError
from ser.serve.routes.demo import STATIC_DIR
from ser.serve.security import DOCS_CSP

router = APIRouter()

SWAGGER_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css")


def swagger_dir() -> Path | None:
    """The folder of the Swagger UI files shipped by ``fastapi-offline`` (None when it is not installed)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if all((folder / a).is_file() for a in SWAGGER_ASSETS) else None


def _docs_on(request: Request) -> None:
    if not settings_of(request).docs:
        raise ApiError(404, "not_found", "Not Found")


@router.get("/openapi.json", include_in_schema=False, dependencies=GUARDED)
async def openapi_json(request: Request) -> JSONResponse:
    """The OpenAPI document."""
    _docs_on(request)
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False)
async def docs_page(request: Request) -> FileResponse:
    """Swagger UI (an empty shell until the document loads; no data in it)."""
    _docs_on(request)
    if swagger_dir() is None:
        raise ApiError(404, "not_found", "/docs needs the fastapi-offline package (Swagger UI without a CDN)")
    return FileResponse(
        STATIC_DIR / "docs.html", headers={"Cache-Control": "no-cache", "Content-Security-Policy": DOCS_CSP}
    )


@router.get("/docs/assets/{name}", include_in_schema=False)
async def docs_asset(request: Request, name: str) -> FileResponse:
    """Swagger UI's script and style sheet, and the page's own script (a fixed list: nothing else is served)."""
    _docs_on(request)
    folder = swagger_dir()
    if name == "docs.js":
        return FileResponse(STATIC_DIR / "docs.js", headers={"Cache-Control": "no-cache"})
    if name not in SWAGGER_ASSETS or folder is None:
        raise ApiError(404, "not_found", f"no docs asset {name!r}")
    return FileResponse(folder / name, headers={"Cache-Control": "public, max-age=86400"})
