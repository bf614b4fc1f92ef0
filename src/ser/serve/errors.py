"""API errors: :class:`ApiError` and the JSON error body ``{"error": {"code", "message", "details"?}}`` every error
response has (:func:`install_error_handlers` maps validation errors, HTTP errors and bugs to it too)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ser.serve.schemas import ErrorBody, ErrorOut


class ApiError(Exception):
    """A request the API refuses: HTTP ``status``, a ``code`` and a one-line ``message``."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details

    def body(self) -> ErrorBody:
        return ErrorBody(code=self.code, message=self.message, details=self.details)


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorOut(error=ErrorBody(code=code, message=message, details=details))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


log = logging.getLogger("ser.serve")

CLIENT_CLOSED = 499
"""Status recorded (``ser_http_requests_total{status="499"}``, nginx's convention) for a request whose client went
away before it was read; no client ever sees it."""

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def install_error_handlers(app: FastAPI) -> None:
    """Every error as the JSON error body: :class:`ApiError`, request validation (422 ``invalid_request``), HTTP
    errors (404, 405, ...) and unexpected exceptions (500 ``internal``, never the traceback)."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        msg = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errs[:5])
        return error_response(422, "invalid_request", msg or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")  # its headers kept: a 405 says what is Allowed
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _: ClientDisconnect) -> Response:  # not an error of ours: one line
        log.warning("client disconnected before its request was read: %s %s", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:  # a bug, never a bad input
        return error_response(500, "internal", f"internal error ({type(exc).__name__})")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorOut, "description": d}
    for s, d in {
        400: "empty upload or malformed multipart body",
        401: "missing or wrong X-API-Key",
        408: "the request body did not arrive within the body timeout",
        413: "upload larger than allowed",
        415: "content type neither multipart/form-data nor audio",
        422: "missing file, several files on /v1/predict, undecodable / invalid / too long / too large audio "
        "(sample rate, channels, decoded size), bad parameters, too many timeline points",
        503: "no model loaded",
        504: "inference timed out",
    }.items()
}
"""The error responses of the upload routes, for the OpenAPI document."""
