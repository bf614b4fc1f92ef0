"""The stream session: :class:`StreamSession`, fed the client's messages, returns the messages to send back
(protocol in :mod:`ser.serve.stream`)."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ser import TARGET_SR
from ser.errors import AudioError, SerError
from ser.features.streaming import WindowSpectrogram
from ser.monitor.ids import new_id
from ser.serve.stream.protocol import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    MAX_TEXT_CHARS,
    Close,
    StreamConfig,
    StreamError,
    StreamLimits,
    check_frame,
    decode_frame,
    error_message,
    parse_start,
)
from ser.serve.stream.segmentation import Endpointer, FrameVad, SampleBuffer, resampler
from ser.vad import VAD_RATES

PENDING_S = 0.1
"""Client audio (seconds) a session queues before decoding and voice-flagging it in one go (see
:meth:`StreamSession.ingest_frame`)."""


class PredictorLike(Protocol):
    """What a session needs of a model (:class:`ser.inference.Predictor` is one)."""

    labels: list[str]
    version: str

    @property
    def sample_rate(self) -> int: ...

    def predict_proba(self, audio: np.ndarray) -> np.ndarray: ...


FinalHook = Callable[[Any, np.ndarray, dict[str, Any], np.ndarray | None], str]
"""``on_final(predictor, audio, answer, features)`` → the final's prediction id: the service logs the utterance's
answer (``answer``: label, confidence, probabilities, duration_s, processing_ms; ``features``: the model input the
answer was computed from, when the predictor gives it) and issues its id."""


class StreamSession:
    """One stream: fed the client's messages with :meth:`handle` (or :meth:`on_text` / :meth:`on_bytes`, or
    :meth:`feed` with float samples in-process), it returns the messages to send back, in order.

    ``model()`` returns the predictor to use (called once, at ``start``; the whole stream stays on it even if the
    server hot-reloads); it may raise :class:`ser.errors.SerError` (e.g. no model loaded yet). Each ``final`` gets a
    ``prediction_id`` (from ``on_final``, which the service uses to log the answer, else a new UUIDv7). After each call,
    :attr:`close` is set when the transport must close (after sending the returned messages). Not thread-safe:
    one caller at a time (the route handles one message at a time, in a worker thread).
    """

    def __init__(
        self,
        model: Callable[[], PredictorLike],
        limits: StreamLimits | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
        on_final: FinalHook | None = None,
    ):
        self.model, self.limits, self.clock = model, limits or StreamLimits(), clock
        self.on_final = on_final
        self.config: StreamConfig | None = None
        self.predictor: PredictorLike | None = None
        self.close: Close | None = None
        self.errors = 0
        self.utterances = 0
        self.partials = 0
        self._pending = bytearray()  # queued client bytes, not yet decoded (see ingest_frame)

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
        """The cheap half of :meth:`on_bytes`: check the frame and queue its bytes (no model call); returns error
        messages, if any. Then :meth:`work_pending` says whether :meth:`advance` will call the model (a hop completed
        or an utterance may close), so a server can run only that in a worker.

        Queued bytes are decoded, resampled and voice-flagged together once :data:`PENDING_S` of audio is queued or
        the next hop is complete (:meth:`_flush`): per 20 ms frame, those numpy calls on a few hundred samples
        cost more than the samples (the server's event loop spent more on them than on the WebSocket itself). A
        final is therefore sent at most :data:`PENDING_S` later; partials are not delayed."""
        if self.close is not None:
            return []
        try:
            if self.config is None:
                raise StreamError("not_started", 'send {"type": "start", ...} before audio')
            if len(data) > self.limits.max_frame_bytes:
                raise StreamError(
                    "frame_too_large", f"frame of {len(data)} bytes (at most {self.limits.max_frame_bytes}); dropped"
                )
            check_frame(data, self.config.encoding)
        except StreamError as exc:
            return self._error(exc)
        self._pending += data
        n = len(self._pending) // self._width
        if n >= self._block or self._buf.end + n * self._ratio >= self._next_partial:
            return self._flush()
        return []

    def _flush(self, last: bool = False) -> list[dict[str, Any]]:
        """Decode, resample, buffer and voice-flag the queued frames (with ``last``, flush the resampler too)."""
        assert self.config is not None
        data = bytes(self._pending)
        self._pending = bytearray()
        if not data and not last:
            return []
        return self._ingest(decode_frame(data, self.config.encoding), last)

    def work_pending(self) -> bool:
        """Would :meth:`advance` call the model? True when a hop is complete or the endpointer may close an
        utterance over the frames analysed so far (checked on a copy of its state)."""
        if self.config is None or self.close is not None:
            return False
        if self._buf.end >= self._next_partial:
            return True
        ep = self._endpointer
        upto = self._buf.end / self.sr
        if not (ep.n < self._flag0 + len(self._flags) and (ep.n + 1) * self.frame_s <= upto + 1e-9):
            return False  # no new VAD frame to push (most frames): no copy of the endpointer needed
        ep = copy.copy(ep)
        while ep.n < self._flag0 + len(self._flags) and (ep.n + 1) * self.frame_s <= upto + 1e-9:
            if ep.push(self._flags[ep.n - self._flag0]) is not None:
                return True
        return False

    def advance(self, t0: float | None = None) -> list[dict[str, Any]]:
        """Partials and finals due after :meth:`ingest_frame` (``t0``: the frame's arrival, for ``latency_ms``)."""
        if self.close is not None or self.config is None:
            return []
        if not self._fresh and self._buf.end < self._next_partial:
            return []  # nothing analysed since the last call and no hop due (most frames): nothing can be due
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
        self.predictor_min_samples = int(getattr(p, "min_samples", 1))
        self._to_model = resampler(cfg.sample_rate, self.sr)
        vad_sr = self.sr if self.sr in VAD_RATES else TARGET_SR
        self._to_vad = resampler(self.sr, vad_sr) if vad_sr != self.sr else None
        self._vad = FrameVad(vad_sr, lim.vad)
        self.frame_s = lim.vad.frame_ms / 1000.0
        self._endpointer = Endpointer(
            end_silence=math.ceil(lim.end_silence_s / self.frame_s - 1e-9),
            min_frames=math.ceil(lim.min_utterance_s / self.frame_s - 1e-9),
            max_frames=max(1, int(lim.max_utterance_s / self.frame_s)),
        )
        self.hop = max(1, round(cfg.hop_s * self.sr))
        self.window = max(self.hop, round(cfg.window_s * self.sr))
        # Partials look at overlapping windows: a model that says how its STFT is made gets each window's magnitude
        # from one WindowSpectrogram, which computes every inner frame once (the same numbers as from scratch).
        stft_args = getattr(p, "stft_args", None)
        self._spec = WindowSpectrogram(**stft_args()) if callable(stft_args) else None
        self._buf = SampleBuffer(2 * (self.window + self.hop))
        self._flags: list[bool] = []  # VAD flags of frames _flag0, _flag0 + 1, ...
        self._flag0 = 0
        self._next_partial = self.hop
        self._pending = bytearray()
        self._width = 2 if cfg.encoding == "pcm16" else 4
        self._block = max(1, round(PENDING_S * cfg.sample_rate))
        self._ratio = self.sr / cfg.sample_rate
        self._fresh = False  # audio analysed since the last _advance
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
        out = self._flush()
        if self.close is None:
            out += self._ingest(samples, last)
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
        self._flags.extend(self._vad.push(vad_in).tolist())
        self._fresh = True
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
        self._fresh = False
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
                clip = self._buf.slice(start, end)
                if self._spec is not None and clip.size >= self.predictor_min_samples:
                    S = self._spec.magnitude(clip, start)
                    proba = self.predictor.predict_proba(clip, S=S)  # type: ignore[call-arg]
                else:
                    proba = self.predictor.predict_proba(clip)
                p = np.asarray(proba, dtype=np.float64)
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
        clip = self._buf.slice(a, b)
        t0 = time.perf_counter()
        feats = None
        try:
            if self.on_final is not None and hasattr(type(self.predictor), "proba_and_features"):
                proba, feats = self.predictor.proba_and_features(clip)  # type: ignore[attr-defined]
            else:
                proba = self.predictor.predict_proba(clip)
            p = np.asarray(proba, dtype=np.float64)
        except AudioError:
            return []
        self.utterances += 1
        k = int(np.argmax(p))
        probs = {lab: float(v) for lab, v in zip(self.predictor.labels, p, strict=True)}
        label = self.predictor.labels[k]
        pid = None
        if self.on_final is not None:
            answer = {
                "label": label,
                "confidence": float(p[k]),
                "probabilities": probs,
                "duration_s": clip.size / self.sr,
                "processing_ms": (time.perf_counter() - t0) * 1e3,
            }
            pid = self.on_final(self.predictor, clip, answer, feats)
        return [
            {
                "type": "final",
                "prediction_id": pid or new_id(),
                "utterance": self.utterances,
                "start": round(a / self.sr, 4),
                "end": round(b / self.sr, 4),
                "label": label,
                "probabilities": probs,
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
        """Seconds of (model-rate) audio received so far (queued frames included)."""
        if self.config is None:
            return 0.0
        return (self._buf.end + len(self._pending) // self._width * self._ratio) / self.sr
