"""Real-time streaming emotion recognition: the session behind ``WS /v1/stream`` and ``ser listen``.

:class:`StreamSession` is pure session logic: it is fed the client's messages (text or bytes) and returns the
messages to send back, so it is tested without a socket; the WebSocket route (:mod:`ser.serve.app`) and the
terminal client (:mod:`ser.cli.listen_cmds`) only move bytes. Nothing here imports PyTorch.

Protocol (JSON text messages, audio as binary frames):

1. client → ``{"type": "start", "sample_rate": 16000, "encoding": "pcm16" | "float32", "hop_s": 0.5,
   "window_s": 2.0}``; ``sample_rate`` is any integer in 8000..48000 Hz (resampled to the model's rate here),
   ``hop_s`` (0.1..5 s, default 0.5) and ``window_s`` (0.5..10 s, >= ``hop_s``, default 2.0) are optional;
2. server → ``{"type": "ready", "model_version", "labels", "sample_rate" (the model's), "hop_s", "window_s"}``;
3. client → binary frames of little-endian PCM16 or float32 mono samples, any number of whole samples per frame;
4. server → every ``hop_s`` of new audio, ``{"type": "partial", "t", "voiced", "label", "probabilities",
   "latency_ms"}``: ``t`` is the stream time (s) at the window's end, the prediction covers the last ``window_s``
   of audio. **Choice:** a window holding less than ``partial_min_voiced_s`` of voice is not classified at all
   (no inference); its partial says ``"voiced": false`` with ``label`` and ``probabilities`` null;
5. server → per utterance ``{"type": "final", "utterance" (1, 2, ...), "start", "end" (s), "label",
   "probabilities"}`` classified on the whole utterance's audio. An utterance is a run of voiced VAD frames (pauses
   shorter than ``end_silence_s`` = 0.5 s inside it) ended by ``end_silence_s`` of non-voice or by ``end``;
   shorter than ``min_utterance_s`` it is dropped, longer than ``max_utterance_s`` it is cut;
6. client → ``{"type": "end"}``: the server sends the remaining finals, ``{"type": "done", "utterances": n}`` and
   closes normally (1000).

Malformed input is answered with ``{"type": "error", "code", "message"}`` and the stream continues wherever it can
(the bad message or frame is dropped): ``not_started`` (audio before start), ``bad_json``, ``bad_message`` (not an
object, no type, too long), ``unknown_type``, ``bad_start`` (rate, encoding, hop or window out of range),
``already_started``, ``not_ready`` (no model loaded yet; send start again), ``bad_frame`` (a byte count that is
not whole samples), ``invalid_audio`` (NaN or Inf float32), ``frame_too_large``. The session asks to close (1008,
policy violation) only when it cannot go on: ``stream_too_long`` or ``too_many_errors``.

Voice activity is :mod:`ser.serve.timeline`'s: webrtcvad on 16-bit PCM frames with the same energy gate
(:func:`~ser.serve.timeline.to_pcm16`, :func:`~ser.serve.timeline.frame_levels_db`, :class:`VadConfig`), run on
the model-rate stream (or a 16 kHz copy when webrtcvad does not take the model's rate); one ``webrtcvad.Vad`` per
session keeps its adaptive state across frames. Times are seconds from the first sample of the stream, counted on
the model-rate stream.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ser.errors import AudioError, SerError
from ser.serve.timeline import VAD_RATES, VadConfig, frame_levels_db, to_pcm16

ENCODINGS = ("pcm16", "float32")
MIN_RATE, MAX_RATE = 8000, 48000
DEFAULT_HOP_S, DEFAULT_WINDOW_S = 0.5, 2.0
MAX_TEXT_CHARS = 64 * 1024

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_UNSUPPORTED = 1003
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013


class PredictorLike(Protocol):
    """What a session needs of a model (:class:`ser.inference.Predictor` is one)."""

    labels: list[str]
    version: str

    @property
    def sample_rate(self) -> int: ...

    def predict_proba(self, audio: np.ndarray) -> np.ndarray: ...


# ----------------------------------------------------------------------------------------------------------------
# settings and messages


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
    if v is None or isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise StreamError("bad_start", f"{key} must be a number, got {v!r}")
    return float(v)


def parse_start(msg: dict[str, Any], limits: StreamLimits | None = None) -> StreamConfig:
    """Validate a ``start`` message (a decoded JSON object) → :class:`StreamConfig`; :class:`StreamError`
    ``bad_start`` names the first bad field."""
    lim = limits or StreamLimits()
    sr = _number(msg, "sample_rate", None)
    if sr != int(sr) or not MIN_RATE <= sr <= MAX_RATE:
        raise StreamError("bad_start", f"sample_rate must be an integer in {MIN_RATE}..{MAX_RATE} Hz, got {sr:g}")
    encoding = msg.get("encoding", "pcm16")
    if encoding not in ENCODINGS:
        raise StreamError("bad_start", f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
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


# ----------------------------------------------------------------------------------------------------------------
# pure building blocks


class SampleBuffer:
    """Growable ring of float32 samples addressed by absolute stream index: :meth:`append` at the end,
    :meth:`slice` ``[a, b)``, :meth:`drop_before` to forget old samples (amortised O(1) per sample)."""

    def __init__(self, capacity: int = 1 << 16):
        self._data = np.zeros(max(16, capacity), dtype=np.float32)
        self._lo = 0  # index into _data of the first kept sample
        self._hi = 0  # one past the last
        self.start = 0  # absolute index of the first kept sample

    @property
    def end(self) -> int:
        """Absolute index one past the newest sample (= samples appended so far)."""
        return self.start + self._hi - self._lo

    def __len__(self) -> int:
        return self._hi - self._lo

    def append(self, x: np.ndarray) -> None:
        n = int(x.size)
        if self._hi + n > self._data.size:
            live = self._data[self._lo : self._hi]
            if live.size + n > self._data.size // 2:
                new = np.zeros(2 * (live.size + n), dtype=np.float32)
                new[: live.size] = live
                self._data = new
            else:
                self._data[: live.size] = live.copy()
            self._lo, self._hi = 0, live.size
        self._data[self._hi : self._hi + n] = x
        self._hi += n

    def slice(self, a: int, b: int) -> np.ndarray:
        """Copy of samples with absolute indices ``[a, b)``, clipped to what is kept."""
        a, b = max(a, self.start), min(b, self.end)
        if b <= a:
            return np.zeros(0, dtype=np.float32)
        return self._data[self._lo + a - self.start : self._lo + b - self.start].copy()

    def drop_before(self, index: int) -> None:
        """Forget samples with absolute index < ``index``."""
        k = min(max(0, index - self.start), len(self))
        self._lo += k
        self.start += k


class Endpointer:
    """Utterance boundaries from a stream of VAD frame flags (frame ``i`` covers ``[i, i + 1)`` frame units).

    An utterance opens at a voiced frame and closes once ``end_silence`` consecutive unvoiced frames follow its last
    voiced frame, or when it reaches ``max_frames``; one shorter than ``min_frames`` (first to last voiced frame) is
    dropped. :meth:`push` and :meth:`flush` return a closed utterance ``(start_frame, end_frame)`` (end exclusive,
    ending at the last voiced frame) or None.
    """

    def __init__(self, end_silence: int, min_frames: int, max_frames: int):
        self.end_silence, self.min_frames, self.max_frames = max(1, end_silence), max(1, min_frames), max_frames
        self.n = 0  # frames pushed
        self.start: int | None = None  # first voiced frame of the open utterance
        self.last_end = 0  # one past its last voiced frame

    def push(self, voiced: bool) -> tuple[int, int] | None:
        i = self.n
        self.n += 1
        if voiced:
            if self.start is None:
                self.start = i
            self.last_end = i + 1
            if self.last_end - self.start >= self.max_frames:
                return self._close()
            return None
        if self.start is not None and self.n - self.last_end >= self.end_silence:
            return self._close()
        return None

    def flush(self) -> tuple[int, int] | None:
        """Close the open utterance (end of stream)."""
        return self._close() if self.start is not None else None

    def _close(self) -> tuple[int, int] | None:
        assert self.start is not None
        seg = (self.start, self.last_end)
        self.start = None
        return seg if seg[1] - seg[0] >= self.min_frames else None


class FrameVad:
    """Streaming voice activity: webrtcvad (one ``Vad`` for the whole stream) AND the energy gate of
    :func:`ser.serve.timeline.vad_flags`, over consecutive ``cfg.frame_ms`` frames of ``sr`` Hz audio
    (``sr`` in :data:`VAD_RATES`). :meth:`push` takes any number of samples and returns the flags of the frames it
    completed, bool ``(n_new_frames,)``."""

    def __init__(self, sr: int, cfg: VadConfig):
        import webrtcvad

        if sr not in VAD_RATES:
            raise ValueError(f"webrtcvad takes {VAD_RATES} Hz, got {sr}")
        self.sr, self.cfg = sr, cfg
        self.frame_len = sr * cfg.frame_ms // 1000
        self._vad = webrtcvad.Vad(cfg.aggressiveness)
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, x: np.ndarray) -> np.ndarray:
        buf = np.concatenate([self._pending, np.asarray(x, dtype=np.float32)])
        n = buf.size // self.frame_len
        self._pending = buf[n * self.frame_len :]
        frames = buf[: n * self.frame_len]
        pcm = to_pcm16(frames)
        L = self.frame_len
        flags = np.fromiter(
            (self._vad.is_speech(pcm[i * L : (i + 1) * L].tobytes(), self.sr) for i in range(n)), bool, n
        )
        if self.cfg.min_level_db is not None:
            flags &= frame_levels_db(frames, L) >= self.cfg.min_level_db
        return flags


def _resampler(in_sr: int, out_sr: int) -> Callable[[np.ndarray, bool], np.ndarray]:
    """``f(chunk, last)`` resampling a stream chunk by chunk (soxr's streaming resampler keeps its filter state;
    ``last=True`` flushes the tail); the identity when the rates match."""
    if in_sr == out_sr:
        return lambda x, last=False: np.asarray(x, dtype=np.float32)
    import soxr

    rs = soxr.ResampleStream(in_sr, out_sr, 1, dtype="float32", quality="HQ")
    return lambda x, last=False: rs.resample_chunk(np.asarray(x, dtype=np.float32), last=last)


# ----------------------------------------------------------------------------------------------------------------
# the session


class StreamSession:
    """One stream: fed the client's messages with :meth:`handle` (or :meth:`on_text` / :meth:`on_bytes`, or
    :meth:`feed` with float samples in-process), it returns the messages to send back, in order.

    ``model()`` returns the predictor to use (called once, at ``start``; the whole stream stays on it even if the
    server hot-reloads); it may raise :class:`ser.errors.SerError` (e.g. no model loaded yet). After each call,
    :attr:`close` is set when the transport must close (after sending the returned messages). Not thread-safe:
    one caller at a time (the route handles one message at a time, in a worker thread).
    """

    def __init__(
        self,
        model: Callable[[], PredictorLike],
        limits: StreamLimits | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.model, self.limits, self.clock = model, limits or StreamLimits(), clock
        self.config: StreamConfig | None = None
        self.predictor: PredictorLike | None = None
        self.close: Close | None = None
        self.errors = 0
        self.utterances = 0
        self.partials = 0

    # ------------------------------------------------------------------------------------------------ dispatch

    @property
    def started(self) -> bool:
        return self.config is not None

    def handle(self, message: str | bytes) -> list[dict[str, Any]]:
        """Messages answering one client message (text → control, bytes → audio)."""
        if isinstance(message, bytes | bytearray | memoryview):
            return self.on_bytes(bytes(message))
        return self.on_text(message)

    def on_text(self, text: str) -> list[dict[str, Any]]:
        """Answer a JSON control message (``start`` or ``end``)."""
        if self.close is not None:
            return []
        try:
            if len(text) > MAX_TEXT_CHARS:
                raise StreamError("bad_message", f"text message of {len(text)} characters (at most {MAX_TEXT_CHARS})")
            try:
                msg = json.loads(text)
            except (json.JSONDecodeError, ValueError) as exc:
                raise StreamError("bad_json", f"not valid JSON: {exc}") from None
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                raise StreamError("bad_message", 'a control message is a JSON object with a string "type"')
            kind = msg["type"]
            if kind == "start":
                return self.start(parse_start(msg, self.limits))
            if kind == "end":
                return self.finish()
            raise StreamError("unknown_type", f"unknown message type {kind!r} (expected start or end)")
        except StreamError as exc:
            return self._error(exc)

    def on_bytes(self, data: bytes) -> list[dict[str, Any]]:
        """Answer one binary audio frame (in the started stream's encoding)."""
        t0 = self.clock()
        out = self.ingest_frame(data)
        return out + self.advance(t0)

    def ingest_frame(self, data: bytes) -> list[dict[str, Any]]:
        """The cheap half of :meth:`on_bytes`: decode the frame, buffer it and run voice activity over it (no
        model call); returns error messages, if any. Then :meth:`work_pending` says whether :meth:`advance` will
        call the model (a hop completed or an utterance may close), so a server can run only that in a worker."""
        if self.close is not None:
            return []
        try:
            if self.config is None:
                raise StreamError("not_started", 'send {"type": "start", ...} before audio')
            if len(data) > self.limits.max_frame_bytes:
                raise StreamError(
                    "frame_too_large", f"frame of {len(data)} bytes (at most {self.limits.max_frame_bytes}); dropped"
                )
            samples = decode_frame(data, self.config.encoding)
        except StreamError as exc:
            return self._error(exc)
        return self._ingest(samples)

    def work_pending(self) -> bool:
        """Would :meth:`advance` call the model? True when a hop is complete or the endpointer may close an
        utterance over the frames analysed so far (checked on a copy of its state)."""
        if self.config is None or self.close is not None:
            return False
        if self._buf.end >= self._next_partial:
            return True
        ep = copy.copy(self._endpointer)
        upto = self._buf.end / self.sr
        while ep.n < self._flag0 + len(self._flags) and (ep.n + 1) * self.frame_s <= upto + 1e-9:
            if ep.push(self._flags[ep.n - self._flag0]) is not None:
                return True
        return False

    def advance(self, t0: float | None = None) -> list[dict[str, Any]]:
        """Partials and finals due after :meth:`ingest_frame` (``t0``: the frame's arrival, for ``latency_ms``)."""
        if self.close is not None or self.config is None:
            return []
        return self._advance(self.clock() if t0 is None else t0)

    def _error(self, exc: StreamError) -> list[dict[str, Any]]:
        self.errors += 1
        out = [error_message(exc.code, exc.message)]
        if self.errors >= self.limits.max_errors:
            out.append(error_message("too_many_errors", f"{self.errors} errors on this stream; closing"))
            self.close = Close(CLOSE_POLICY, "too many errors")
        return out

    # ------------------------------------------------------------------------------------------------ start

    def start(self, cfg: StreamConfig) -> list[dict[str, Any]]:
        """Open the stream (load the predictor, set up resampling and VAD) → ``[ready]``."""
        if self.config is not None:
            raise StreamError("already_started", "the stream is already started")
        try:
            p = self.model()
        except SerError as exc:
            raise StreamError("not_ready", f"no model to stream with: {exc}") from None
        lim = self.limits
        self.predictor, self.sr = p, int(p.sample_rate)
        self._to_model = _resampler(cfg.sample_rate, self.sr)
        vad_sr = self.sr if self.sr in VAD_RATES else 16000
        self._to_vad = _resampler(self.sr, vad_sr) if vad_sr != self.sr else None
        self._vad = FrameVad(vad_sr, lim.vad)
        self.frame_s = lim.vad.frame_ms / 1000.0
        self._endpointer = Endpointer(
            end_silence=math.ceil(lim.end_silence_s / self.frame_s - 1e-9),
            min_frames=math.ceil(lim.min_utterance_s / self.frame_s - 1e-9),
            max_frames=max(1, int(lim.max_utterance_s / self.frame_s)),
        )
        self.hop = max(1, round(cfg.hop_s * self.sr))
        self.window = max(self.hop, round(cfg.window_s * self.sr))
        self._buf = SampleBuffer(2 * (self.window + self.hop))
        self._flags: list[bool] = []  # VAD flags of frames _flag0, _flag0 + 1, ...
        self._flag0 = 0
        self._next_partial = self.hop
        self.config = cfg
        return [
            {
                "type": "ready",
                "model_version": p.version,
                "labels": list(p.labels),
                "sample_rate": self.sr,
                "hop_s": cfg.hop_s,
                "window_s": cfg.window_s,
            }
        ]

    # ------------------------------------------------------------------------------------------------ audio

    def feed(self, samples: np.ndarray, *, t0: float | None = None, last: bool = False) -> list[dict[str, Any]]:
        """Take float32 samples ``(n,)`` at the client's rate → the partials (one per completed hop) and finals
        they trigger. ``last`` flushes the resampler (end of stream). ``t0``: arrival time for ``latency_ms``."""
        if self.close is not None:
            return []
        if self.config is None:
            return self._error(StreamError("not_started", 'send {"type": "start", ...} before audio'))
        t0 = self.clock() if t0 is None else t0
        out = self._ingest(samples, last)
        if self.close is not None:
            return out
        return out + self._advance(t0)

    def _ingest(self, samples: np.ndarray, last: bool = False) -> list[dict[str, Any]]:
        """Resample, buffer and voice-flag ``samples``; the error when the stream grows past its limit."""
        x = self._to_model(np.asarray(samples, dtype=np.float32).reshape(-1), last)
        if self._buf.end + x.size > self.limits.max_stream_s * self.sr:
            out = self._error(StreamError("stream_too_long", f"stream longer than {self.limits.max_stream_s:g} s"))
            self.close = Close(CLOSE_POLICY, "stream too long")
            return out
        self._buf.append(x)
        vad_in = x if self._to_vad is None else self._to_vad(x, last)
        self._flags.extend(bool(f) for f in self._vad.push(vad_in))
        return []

    def _endpoint(self, upto_s: float) -> list[dict[str, Any]]:
        """Push the VAD frames that end by ``upto_s`` seconds to the endpointer → the finals they close."""
        out: list[dict[str, Any]] = []
        ep = self._endpointer
        while ep.n < self._flag0 + len(self._flags) and (ep.n + 1) * self.frame_s <= upto_s + 1e-9:
            seg = ep.push(self._flags[ep.n - self._flag0])
            if seg is not None:
                out += self._final(seg)
        return out

    def _advance(self, t0: float) -> list[dict[str, Any]]:
        """Run the endpointer over new VAD frames and emit partials for completed hops, in time order; then
        forget audio and flags no later partial or final needs."""
        out: list[dict[str, Any]] = []
        while True:
            out += self._endpoint(min(self._next_partial, self._buf.end) / self.sr)
            if self._buf.end < self._next_partial:
                break
            out.append(self._partial(self._next_partial, t0))
            self._next_partial += self.hop
        ep = self._endpointer
        first = min(
            ep.n if ep.start is None else ep.start, int((self._next_partial - self.window) / self.sr / self.frame_s)
        )
        if first > self._flag0:
            del self._flags[: first - self._flag0]
            self._flag0 = first
        self._buf.drop_before(min(self._next_partial - self.window, self._sample(first)))
        return out

    def _sample(self, frame: int) -> int:
        """Model-rate sample index at the start of VAD frame ``frame``."""
        return round(frame * self.frame_s * self.sr)

    def _voiced_s(self, a_s: float, b_s: float) -> float:
        """Seconds of voiced VAD frames lying inside ``[a_s, b_s]`` (frames already analysed and still kept)."""
        i = max(math.ceil(a_s / self.frame_s - 1e-6), self._flag0) - self._flag0
        j = max(0, math.floor(b_s / self.frame_s + 1e-6) - self._flag0)
        return sum(self._flags[i:j]) * self.frame_s

    def _partial(self, end: int, t0: float) -> dict[str, Any]:
        assert self.predictor is not None
        start = max(0, end - self.window)
        t = end / self.sr
        voiced = self._voiced_s(start / self.sr, t) >= self.limits.partial_min_voiced_s - 1e-9
        label, probs = None, None
        if voiced:
            try:
                p = np.asarray(self.predictor.predict_proba(self._buf.slice(start, end)), dtype=np.float64)
                label = self.predictor.labels[int(np.argmax(p))]
                probs = {lab: float(v) for lab, v in zip(self.predictor.labels, p, strict=True)}
            except AudioError:
                voiced = False
        self.partials += 1
        return {
            "type": "partial",
            "t": round(t, 4),
            "voiced": voiced,
            "label": label,
            "probabilities": probs,
            "latency_ms": round((self.clock() - t0) * 1e3, 3),
        }

    def _final(self, seg: tuple[int, int]) -> list[dict[str, Any]]:
        assert self.predictor is not None
        a, b = self._sample(seg[0]), self._sample(seg[1])
        try:
            p = np.asarray(self.predictor.predict_proba(self._buf.slice(a, b)), dtype=np.float64)
        except AudioError:
            return []
        self.utterances += 1
        return [
            {
                "type": "final",
                "utterance": self.utterances,
                "start": round(a / self.sr, 4),
                "end": round(b / self.sr, 4),
                "label": self.predictor.labels[int(np.argmax(p))],
                "probabilities": {lab: float(v) for lab, v in zip(self.predictor.labels, p, strict=True)},
            }
        ]

    # ------------------------------------------------------------------------------------------------ end

    def finish(self) -> list[dict[str, Any]]:
        """End of stream: flush the resampler, send the remaining finals and ``done``; asks to close (1000)."""
        if self.close is not None:
            return []
        out: list[dict[str, Any]] = []
        if self.config is not None:
            out += self.feed(np.zeros(0, dtype=np.float32), last=True)
            if self.close is not None:  # the flush itself crossed a limit
                return out
            out += self._endpoint(math.inf)  # frames past the last hop boundary
            seg = self._endpointer.flush()
            if seg is not None:
                out += self._final(seg)
        out.append({"type": "done", "utterances": self.utterances})
        self.close = Close(CLOSE_NORMAL, "done")
        return out

    @property
    def stream_s(self) -> float:
        """Seconds of (model-rate) audio received so far."""
        return self._buf.end / self.sr if self.config is not None else 0.0
