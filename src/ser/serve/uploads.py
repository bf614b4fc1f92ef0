"""Uploads, held in memory only: multipart parsing (never spooled to disk), body reading with size limits, and the
decoding + inference helpers the upload routes run in worker threads. Every bad input is an :class:`ApiError`."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request

from ser.errors import AudioError
from ser.serve.errors import ApiError
from ser.serve.settings import Settings

MULTIPART_SLACK = 64 * 1024
"""Bytes a multipart body may hold beyond its files (boundaries, part headers)."""


@dataclass(frozen=True)
class Part:
    """One multipart part: form field ``name``, client ``filename`` (None for a plain field), its bytes."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """Parse a ``multipart/form-data`` body in memory (nothing is spooled to disk). Raises :class:`ApiError` 400
    when the body or its boundary is malformed."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_multipart", "multipart/form-data without a boundary")
    parts: list[Part] = []
    cur: dict[str, Any] = {}

    def on_part_begin() -> None:
        cur.clear()
        cur.update(headers={}, field=b"", value=b"", data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        cur["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        cur["value"] += data[start:end]

    def on_header_end() -> None:
        cur["headers"][cur["field"].decode("latin-1").lower()] = cur["value"].decode("latin-1")
        cur["field"], cur["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        cur["data"] += data[start:end]

    def on_part_end() -> None:
        _, disp = parse_options_header(cur["headers"].get("content-disposition", ""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp[b"filename"].decode("utf-8", "replace") if b"filename" in disp else None
        parts.append(Part(name, filename, cur["headers"].get("content-type"), bytes(cur["data"])))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {exc}") from None
    return parts


def media_type(request: Request) -> str:
    """The request's content type without parameters, lower case ('' when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_audio_type(mime: str) -> bool:
    return mime.startswith("audio/") or mime == "application/octet-stream"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (or declares more)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise ApiError(413, "too_large", f"request body exceeds the limit of {limit} bytes")
    return bytes(buf)


def check_size(data: bytes, limit: int) -> None:
    if len(data) > limit:
        raise ApiError(413, "too_large", f"file of {len(data)} bytes exceeds the limit of {limit} bytes")


async def read_uploads(request: Request, settings: Settings, *, batch: bool) -> list[Part]:
    """The uploaded file(s) of a request: multipart ``file`` (one) / ``files`` (batch; ``file`` also taken), or for
    a single upload the raw body with an audio content type."""
    mime = media_type(request)
    if mime == "multipart/form-data":
        limit = settings.max_batch_bytes if batch else settings.max_upload_bytes + MULTIPART_SLACK
        parts = parse_multipart(await read_body(request, limit), request.headers["content-type"])
        names = ("files", "file") if batch else ("file",)
        files = [p for p in parts if p.name in names]
        if not files:
            found = ", ".join(sorted({p.name for p in parts})) or "none"
            raise ApiError(422, "missing_file", f"multipart field {names[0]!r} is missing (fields: {found})")
        if not batch:
            check_size(files[0].data, settings.max_upload_bytes)
        return files if batch else files[:1]
    if batch:
        raise ApiError(415, "unsupported_media_type", f"batch takes multipart/form-data, got {mime or 'no type'}")
    if is_audio_type(mime):
        data = await read_body(request, settings.max_upload_bytes)
        return [Part("file", request.headers.get("x-filename"), mime, data)]
    if not mime:
        body = await read_body(request, settings.max_upload_bytes)
        if not body:
            raise ApiError(422, "missing_file", "no file: send multipart field 'file' or an audio/* body")
    raise ApiError(
        415, "unsupported_media_type", f"content type {mime or 'none'!r}: use multipart/form-data or audio/*"
    )


# ----------------------------------------------------------------------------------------------------------------
# decoding and inference (run in worker threads)


def decode_audio(data: bytes, sr: int, max_s: float) -> np.ndarray:
    """Upload bytes → mono float32 ``(n_samples,)`` at ``sr``; :class:`ApiError` for every bad input. The header's
    duration is checked before the samples are decoded."""
    from ser.audio import decode_bytes, probe

    if not data:
        raise ApiError(400, "empty_audio", "empty file (0 bytes)")
    try:
        info = probe(io.BytesIO(data))
    except AudioError as exc:
        raise ApiError(422, "undecodable_audio", str(exc)) from None
    if info.duration_s > max_s:
        raise ApiError(422, "audio_too_long", f"audio of {info.duration_s:.1f} s exceeds the limit of {max_s:g} s")
    try:
        audio = decode_bytes(data, sr)
    except AudioError as exc:
        code = "undecodable_audio" if str(exc).startswith("undecodable") else "invalid_audio"
        raise ApiError(422, code, str(exc)) from None
    if audio.size / sr > max_s + 1e-3:
        raise ApiError(422, "audio_too_long", f"audio of {audio.size / sr:.1f} s exceeds the limit of {max_s:g} s")
    return audio


def predict_bytes(predictor: Any, data: bytes, max_s: float) -> Any:
    """Decode and classify one upload → :class:`ser.inference.Prediction` (processing_ms covers both)."""
    t0 = time.perf_counter()
    audio = decode_audio(data, predictor.sample_rate, max_s)
    try:
        proba = predictor.predict_proba(audio)
    except AudioError as exc:
        raise ApiError(422, "invalid_audio", str(exc)) from None
    return predictor.make_prediction(proba, audio.size / predictor.sample_rate, (time.perf_counter() - t0) * 1e3)


def predict_many(predictor: Any, parts: list[Part], max_bytes: int, max_s: float) -> list[tuple[Part, Any]]:
    """Each part's prediction or its :class:`ApiError` (one bad file does not fail the batch)."""
    out: list[tuple[Part, Any]] = []
    for part in parts:
        try:
            check_size(part.data, max_bytes)
            out.append((part, predict_bytes(predictor, part.data, max_s)))
        except ApiError as exc:
            out.append((part, exc))
    return out


def timeline_bytes(predictor: Any, data: bytes, max_s: float, cfg: Any) -> tuple[Any, float]:
    """Decode one upload and run :func:`ser.serve.timeline.analyze` → ``(Timeline, processing_ms)``."""
    from ser.serve.timeline import analyze

    t0 = time.perf_counter()
    audio = decode_audio(data, predictor.sample_rate, max_s)
    try:
        tl = analyze(audio, predictor.sample_rate, predictor.predict_proba, predictor.labels, cfg)
    except AudioError as exc:
        raise ApiError(422, "invalid_audio", str(exc)) from None
    return tl, (time.perf_counter() - t0) * 1e3
