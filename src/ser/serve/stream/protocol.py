"""The ``WS /v1/stream`` protocol (described in :mod:`ser.serve.stream`): limits, the validated ``start`` message,
error messages, close requests, and the binary frame encodings (little-endian PCM16 or float32 mono)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ser.errors import SerError
from ser.vad import VadConfig

ENCODINGS = ("pcm16", "float32")
MIN_RATE, MAX_RATE = 8000, 48000
DEFAULT_HOP_S, DEFAULT_WINDOW_S = 0.5, 2.0
MAX_TEXT_CHARS = 64 * 1024

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_UNSUPPORTED = 1003
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013


@dataclass(frozen=True)
class StreamLimits:
    """Bounds and segmentation parameters of a session (seconds unless named otherwise)."""

    min_hop_s: float = 0.1
    max_hop_s: float = 5.0
    min_window_s: float = 0.5
    max_window_s: float = 10.0
    max_frame_bytes: int = 1 << 20
    """Largest binary frame (1 MiB: 5.5 s of 48 kHz float32)."""
    max_stream_s: float = 3600.0
    """Longest stream (model-rate audio); past it the session sends ``stream_too_long`` and asks to close."""
    max_errors: int = 100
    """Errors one session may cause before it is closed (``too_many_errors``)."""
    end_silence_s: float = 0.5
    min_utterance_s: float = 0.25
    max_utterance_s: float = 30.0
    partial_min_voiced_s: float = 0.1
    vad: VadConfig = field(default_factory=VadConfig)


@dataclass(frozen=True)
class StreamConfig:
    """A validated ``start`` message: the client's ``sample_rate`` (Hz), sample ``encoding``, ``hop_s`` and
    ``window_s`` (seconds)."""

    sample_rate: int
    encoding: str
    hop_s: float = DEFAULT_HOP_S
    window_s: float = DEFAULT_WINDOW_S


@dataclass(frozen=True)
class Close:
    """The session asks the transport to close with this WebSocket code and reason (after sending its messages)."""

    code: int
    reason: str


class StreamError(SerError):
    """A client message the session refuses: ``code`` and one-line ``message`` for the error message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def error_message(code: str, message: str) -> dict[str, Any]:
    """The ``{"type": "error", "code", "message"}`` message."""
    return {"type": "error", "code": code, "message": message}


def _number(msg: dict[str, Any], key: str, default: float | None) -> float:
    v = msg.get(key, default)
    if isinstance(v, int | float) and not isinstance(v, bool):
        try:  # an integer too large for a float (JSON has no limit on digits) is an OverflowError, not a bug
            x = float(v)
        except OverflowError:
            msg_ = f"{key} must be a finite number, got an integer of {int(v).bit_length()} bits"
            raise StreamError("bad_start", msg_) from None
        if math.isfinite(x):
            return x
    raise StreamError("bad_start", f"{key} must be a finite number, got {_show(v)}")


def _show(v: Any, width: int = 80) -> str:
    """``repr(v)`` cut to ``width`` characters, for an error message (an integer too long to print is described)."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 64:
        return f"an integer of {v.bit_length()} bits"
    try:
        return repr(v)[:width]
    except ValueError:  # e.g. a list holding an integer of more digits than int -> str allows
        return f"a {type(v).__name__}"


def parse_start(msg: dict[str, Any], limits: StreamLimits | None = None) -> StreamConfig:
    """Validate a ``start`` message (a decoded JSON object) → :class:`StreamConfig`; :class:`StreamError`
    ``bad_start`` names the first bad field."""
    lim = limits or StreamLimits()
    sr = _number(msg, "sample_rate", None)
    if sr != int(sr) or not MIN_RATE <= sr <= MAX_RATE:
        raise StreamError("bad_start", f"sample_rate must be an integer in {MIN_RATE}..{MAX_RATE} Hz, got {sr:g}")
    encoding = msg.get("encoding", "pcm16")
    if encoding not in ENCODINGS:
        raise StreamError("bad_start", f"encoding must be one of {', '.join(ENCODINGS)}, got {_show(encoding)}")
    hop = _number(msg, "hop_s", DEFAULT_HOP_S)
    if not lim.min_hop_s <= hop <= lim.max_hop_s:
        raise StreamError("bad_start", f"hop_s must be in {lim.min_hop_s:g}..{lim.max_hop_s:g} s, got {hop:g}")
    window = _number(msg, "window_s", DEFAULT_WINDOW_S)
    if not lim.min_window_s <= window <= lim.max_window_s:
        raise StreamError(
            "bad_start", f"window_s must be in {lim.min_window_s:g}..{lim.max_window_s:g} s, got {window:g}"
        )
    if window < hop:
        raise StreamError("bad_start", f"window_s ({window:g}) must be >= hop_s ({hop:g})")
    return StreamConfig(int(sr), str(encoding), hop, window)


def check_frame(data: bytes, encoding: str) -> None:
    """The checks of :func:`decode_frame` without keeping the samples (whole samples; float32 finite)."""
    width = 2 if encoding == "pcm16" else 4
    if len(data) % width:
        raise StreamError("bad_frame", f"{len(data)} bytes is not a whole number of {width}-byte {encoding} samples")
    if encoding != "pcm16" and not np.all(np.isfinite(np.frombuffer(data, dtype="<f4"))):
        raise StreamError("invalid_audio", "non-finite float32 samples (NaN or Inf); frame dropped")


def decode_frame(data: bytes, encoding: str) -> np.ndarray:
    """One binary frame → float32 samples ``(n,)``: little-endian PCM16 scaled by 1/32768, or float32 as is.

    :class:`StreamError` ``bad_frame`` when the byte count is not whole samples, ``invalid_audio`` for NaN/Inf."""
    width = 2 if encoding == "pcm16" else 4
    if len(data) % width:
        raise StreamError("bad_frame", f"{len(data)} bytes is not a whole number of {width}-byte {encoding} samples")
    if encoding == "pcm16":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768.0)
    x = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise StreamError("invalid_audio", "non-finite float32 samples (NaN or Inf); frame dropped")
    return x


def encode_frame(samples: np.ndarray, encoding: str) -> bytes:
    """Float samples ``(n,)`` in [-1, 1] → the bytes of one binary frame (the inverse of :func:`decode_frame`;
    PCM16 is clipped and rounded)."""
    if encoding == "pcm16":
        x = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768.0), -32768, 32767)
        return x.astype("<i2").tobytes()
    return np.asarray(samples, dtype="<f4").tobytes()
