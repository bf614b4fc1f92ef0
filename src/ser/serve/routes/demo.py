"""The browser demo: ``GET /`` and its script, audio worklet and style sheet under ``/static/`` (files in
``serve/static/``; not in the OpenAPI document).

Open on every server, also one that needs an API key: a browser's navigation cannot carry a key header, and the page
holds nothing (no model information, no data): everything it shows comes from calls that carry the key typed into
it (``X-API-Key`` on HTTP, the ``key.<base64url>`` subprotocol on the WebSocket). Its Content-Security-Policy allows
its own script and style sheet only, and connections to this origin."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ser.serve.errors import ApiError
from ser.serve.security import DEMO_CSP

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def demo_page() -> FileResponse:
    """The browser demo."""
    headers = {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": DEMO_CSP,
        "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    }
    return FileResponse(STATIC_DIR / "index.html", headers=headers)


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str) -> FileResponse:
    """The demo's script and style sheet (a flat folder: no sub-paths, nothing outside it)."""
    path = STATIC_DIR / name
    if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
        raise ApiError(404, "not_found", f"no static file {name!r}")
    return FileResponse(path, headers={"Cache-Control": "no-cache"})
