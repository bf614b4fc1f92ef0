"""Uploads, held in memory only: multipart parsing (never spooled to disk), body reading with size and time limits,
and the decoding + inference helpers the upload routes run in worker threads. Every bad input is an
:class:`ApiError`.

The worker-thread helpers take ``should_stop`` (see :func:`ser.serve.deps.in_thread`): once it is true, decoding
stops before its next block and inference before its next model call (:class:`ser.errors.Cancelled`)."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
from fastapi import Request

from ser.audio import UNKNOWN_FRAMES, AudioInfo, AudioLimitError, Decoded, DecodeLimits
from ser.errors import AudioError
from ser.serve.errors import ApiError
from ser.serve.settings import Settings

StopFlag = Callable[[], bool] | None

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


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (or declares more), and with 408
    ``body_timeout`` when it has not all arrived within ``timeout_s`` seconds (a stalled or trickling client)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    buf = bytearray()
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                buf += chunk
                if len(buf) > limit:
                    raise ApiError(413, "too_large", f"request body exceeds the limit of {limit} bytes")
    except TimeoutError:
        raise ApiError(
            408, "body_timeout", f"request body not received within {timeout_s:g} s ({len(buf)} bytes arrived)"
        ) from None
    return bytes(buf)


def check_size(data: bytes, limit: int) -> None:
    if len(data) > limit:
        raise ApiError(413, "too_large", f"file of {len(data)} bytes exceeds the limit of {limit} bytes")


async def read_uploads(request: Request, settings: Settings, *, batch: bool) -> list[Part]:
    """The uploaded file(s) of a request: multipart ``file`` (one) / ``files`` (batch; ``file`` also taken), or for
    a single upload the raw body with an audio content type."""
    mime = media_type(request)
    timeout = settings.body_timeout_s
    if mime == "multipart/form-data":
        limit = settings.max_batch_bytes if batch else settings.max_upload_bytes + MULTIPART_SLACK
        parts = parse_multipart(await read_body(request, limit, timeout), request.headers["content-type"])
        names = ("files", "file") if batch else ("file",)
        files = [p for p in parts if p.name in names]
        if not files:
            found = ", ".join(sorted({p.name for p in parts})) or "none"
            raise ApiError(422, "missing_file", f"multipart field {names[0]!r} is missing (fields: {found})")
        if not batch:
            if len(files) > 1:
                raise ApiError(
                    422,
                    "too_many_files",
                    f"{len(files)} 'file' parts: /v1/predict takes one (several: /v1/predict/batch)",
                )
            check_size(files[0].data, settings.max_upload_bytes)
        return files
    if batch:
        raise ApiError(415, "unsupported_media_type", f"batch takes multipart/form-data, got {mime or 'no type'}")
    if is_audio_type(mime):
        data = await read_body(request, settings.max_upload_bytes, timeout)
        return [Part("file", request.headers.get("x-filename"), mime, data)]
    if not mime:
        body = await read_body(request, settings.max_upload_bytes, timeout)
        if not body:
            raise ApiError(422, "missing_file", "no file: send multipart field 'file' or an audio/* body")
    raise ApiError(
        415, "unsupported_media_type", f"content type {mime or 'none'!r}: use multipart/form-data or audio/*"
    )


# ----------------------------------------------------------------------------------------------------------------
# decoding and inference (run in worker threads)


def decode_limits(settings: Settings, max_s: float) -> DecodeLimits:
    """The decoding bounds of one upload whose duration limit is ``max_s`` seconds."""
    return DecodeLimits(
        max_s=max_s,
        max_sample_rate=settings.max_sample_rate,
        max_channels=settings.max_channels,
        max_samples=int(max_s * settings.max_decode_samples_per_s),
    )


def decode_audio(
    data: bytes,
    sr: int,
    limits: DecodeLimits,
    should_stop: StopFlag = None,
    check: Callable[[AudioInfo], None] | None = None,
    *,
    split_channels: bool = False,
) -> Decoded:
    """Upload bytes → :class:`ser.audio.Decoded` (mono float32 at ``sr``, or ``(channels, n)`` with
    ``split_channels``); :class:`ApiError` for every bad input. The header is checked against ``limits`` (and
    ``check``) before a sample is decoded; decoding runs in blocks, so memory follows the 16 kHz result, not what
    the file declares."""
    from ser.audio import decode
    from ser.timeline import ChannelError

    if not data:
        raise ApiError(400, "empty_audio", "empty file (0 bytes)")
    try:
        return decode(io.BytesIO(data), sr, limits, should_stop=should_stop, check=check, split_channels=split_channels)
    except AudioLimitError as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    except ChannelError as exc:
        raise ApiError(422, "bad_channels", str(exc)) from None
    except AudioError as exc:
        code = "undecodable_audio" if str(exc).startswith("undecodable") else "invalid_audio"
        raise ApiError(422, code, str(exc)) from None


def predict_bytes(
    predictor: Any,
    data: bytes,
    limits: DecodeLimits,
    should_stop: StopFlag = None,
    *,
    monitor: Any = None,
    route: str = "/v1/predict",
    client_name: str | None = None,
    abstain_below: float | None = None,
) -> dict[str, Any]:
    """Decode and classify one upload → the fields of :class:`ser.serve.schemas.PredictionOut` but ``model_name``
    and ``filename`` (:func:`ser.serve.speech.predict_gated`: no label when there is no speech; processing_ms
    covers decoding and inference), with its ``prediction_id``. ``monitor``: the app's
    :class:`ser.serve.monitoring.ServiceMonitor`, which logs the answer (under ``route``; ``client_name`` only as
    a salted hash) and may hand it to the shadow model; without it the id is issued and nothing is logged.
    ``abstain_below``: the label is ``"uncertain"`` under this top probability (the service's ``abstain_below``)."""
    from ser.monitor.ids import new_id
    from ser.serve.monitoring import FeatureTap
    from ser.serve.speech import predict_gated

    t0 = time.perf_counter()
    decoded = decode_audio(data, predictor.sample_rate, limits, should_stop)
    tap = FeatureTap(predictor) if monitor is not None else None
    try:
        out = predict_gated(
            predictor, decoded.audio, decoded.clipped, t0, should_stop, tap, abstain_below=abstain_below
        )
    except AudioError as exc:
        raise ApiError(422, "invalid_audio", str(exc)) from None
    if monitor is None or tap is None:
        out["prediction_id"] = new_id()
    else:
        out["prediction_id"] = monitor.answered(
            route,
            predictor,
            decoded.audio,
            out,
            logmel=tap.logmel(),
            info=decoded.info,
            client_name=client_name,
            shadow=True,
        )
    return out


def predict_many(
    predictor: Any,
    parts: list[Part],
    max_bytes: int,
    limits: DecodeLimits,
    should_stop: StopFlag = None,
    *,
    monitor: Any = None,
    abstain_below: float | None = None,
) -> list[tuple[Part, Any]]:
    """Each part's result (as :func:`predict_bytes`) or its :class:`ApiError` (one bad file does not fail the
    batch); :class:`ser.errors.Cancelled` stops the whole batch."""
    out: list[tuple[Part, Any]] = []
    for part in parts:
        try:
            check_size(part.data, max_bytes)
            res = predict_bytes(
                predictor,
                part.data,
                limits,
                should_stop,
                monitor=monitor,
                route="/v1/predict/batch",
                client_name=part.filename,
                abstain_below=abstain_below,
            )
            out.append((part, res))
        except ApiError as exc:
            out.append((part, exc))
    return out


@dataclass(frozen=True)
class TimelineAnswer:
    """What :func:`timeline_bytes` returns: the response ``body`` (JSON bytes, serialised in the worker thread),
    the :class:`ser.timeline.Timeline` of each channel (one for ``mix``; for the metrics) and ``processing_ms``
    (decoding + analysis)."""

    body: bytes
    timelines: list[Any]
    processing_ms: float


def check_points(duration_s: float, step_s: float, max_points: int) -> None:
    """422 ``too_many_points`` when a timeline of ``duration_s`` at ``step_s`` would hold more than ``max_points``
    grid points."""
    points = math.ceil(duration_s / step_s - 1e-9)
    if points > max_points:
        raise ApiError(
            422,
            "too_many_points",
            f"step_s={step_s:g} on {duration_s:.1f} s of audio gives {points} timeline points (at most {max_points}):"
            f" use step_s >= {math.ceil(duration_s / max_points * 1000) / 1000:g}",
        )


def timeline_bytes(
    predictor: Any,
    data: bytes,
    limits: DecodeLimits,
    cfg: Any,
    max_points: int,
    should_stop: StopFlag = None,
    *,
    monitor: Any = None,
    client_name: str | None = None,
    channels: str = "mix",
    channel_names: tuple[str, ...] = (),
) -> TimelineAnswer:
    """Decode one upload, run :func:`ser.timeline.analyze` and serialise the answer (here, off the event loop):
    one timeline of the downmix (``channels="mix"``, :class:`ser.serve.schemas.TimelineOut`), or one per channel
    named by ``channel_names`` (``"split"``, :class:`ser.serve.schemas.TimelineSplitOut`; a mono upload, or one
    with another number of channels than names, is a 422 ``bad_channels`` read from the header). The number of
    grid points (per channel) is checked on the header, before decoding. Each segment's answer gets a
    ``prediction_id`` (and, with ``monitor``, a record of its own: the segment's audio statistics and output)."""
    from ser.serve.schemas import TimelineOut, TimelineSplitOut
    from ser.timeline import MIX, analyze
    from ser.timeline import channel_names as names_of

    split = channels == "split"
    names: list[str] = []

    def header(info: AudioInfo) -> None:
        names[:] = names_of(info.channels, channel_names) if split else [MIX]
        if info.frames < UNKNOWN_FRAMES:
            check_points(info.duration_s, cfg.step_s, max_points)

    t0 = time.perf_counter()
    decoded = decode_audio(data, predictor.sample_rate, limits, should_stop, header, split_channels=split)
    lanes = decoded.audio if split else decoded.audio[None]
    check_points(lanes.shape[1] / predictor.sample_rate, cfg.step_s, max_points)
    timelines, bodies = [], []
    for lane in lanes:
        ids: list[str] = []
        classify = _segment_classifier(predictor, ids, monitor, decoded.info, client_name)
        try:
            tl = analyze(lane, predictor.sample_rate, classify, predictor.labels, cfg, should_stop=should_stop)
        except AudioError as exc:
            raise ApiError(422, "invalid_audio", str(exc)) from None
        body = tl.to_dict()
        for seg_out, pid in zip(body["segments"], ids, strict=True):
            seg_out["prediction_id"] = pid
        timelines.append(tl)
        bodies.append(body)
    ms = (time.perf_counter() - t0) * 1e3
    head = {"model_name": predictor.name, "model_version": predictor.version, "processing_ms": round(ms, 3)}
    if not split:
        return TimelineAnswer(TimelineOut(**head, **bodies[0]).model_dump_json().encode(), timelines, ms)
    out = TimelineSplitOut(
        **head,
        labels=bodies[0]["labels"],
        duration_s=bodies[0]["duration_s"],
        channels=[
            {"channel": n, "segments": b["segments"], "timeline": b["timeline"], "summary": b["summary"]}
            for n, b in zip(names, bodies, strict=True)
        ],
    )
    return TimelineAnswer(out.model_dump_json().encode(), timelines, ms)


def _segment_classifier(
    predictor: Any, ids: list[str], monitor: Any, info: AudioInfo, client_name: str | None
) -> Callable[[np.ndarray], np.ndarray]:
    """The model on one segment, appending the segment's ``prediction_id`` to ``ids``; with a monitor, the
    segment's answer is recorded (only segments the model accepted reach the end, so ids stay aligned with the
    timeline's segments)."""
    from ser.monitor.ids import new_id
    from ser.serve.monitoring import FeatureTap

    sr = int(predictor.sample_rate)

    def classify(clip: np.ndarray) -> np.ndarray:
        if monitor is None:
            p = np.asarray(predictor.predict_proba(clip))
            ids.append(new_id())
            return p
        tap = FeatureTap(predictor)
        s0 = time.perf_counter()
        p = tap(clip)
        k = int(np.argmax(p))
        seg = {
            "label": predictor.labels[k],
            "confidence": float(p[k]),
            "probabilities": {lab: float(v) for lab, v in zip(predictor.labels, p, strict=True)},
            "duration_s": clip.size / sr,
            "processing_ms": (time.perf_counter() - s0) * 1e3,
        }
        route, logmel = "/v1/timeline", tap.logmel()
        ids.append(monitor.answered(route, predictor, clip, seg, logmel=logmel, info=info, client_name=client_name))
        return p

    return classify
