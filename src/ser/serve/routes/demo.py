"""The browser demo: ``GET /`` and its script and style sheet under ``/static/`` (files in ``serve/static/``; not
in the OpenAPI document)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ser.serve.errors import ApiError

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def demo_page() -> FileResponse:
    """The browser demo."""
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str) -> FileResponse:
    """The demo's script and style sheet (a flat folder: no sub-paths, nothing outside it)."""
    path = STATIC_DIR / name
    if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
        raise ApiError(404, "not_found", f"no static file {name!r}")
    return FileResponse(path, headers={"Cache-Control": "no-cache"})
