"""Real-time streaming emotion recognition: the session behind ``WS /v1/stream`` and ``ser listen``.

Modules: :mod:`~ser.serve.stream.protocol` (messages, limits, start validation, frame encodings),
:mod:`~ser.serve.stream.segmentation` (sample buffer, streaming VAD, endpointer, resampler) and
:mod:`~ser.serve.stream.session` (:class:`StreamSession`); everything public is importable from here.

:class:`StreamSession` is pure session logic: it is fed the client's messages (text or bytes) and returns the
messages to send back, so it is tested without a socket; the WebSocket route (:mod:`ser.serve.routes.stream`) and
the terminal client (:mod:`ser.cli.listen_cmds`) only move bytes. Nothing here imports PyTorch.

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
5. server → per utterance ``{"type": "final", "prediction_id", "utterance" (1, 2, ...), "start", "end" (s),
   "label", "probabilities"}`` classified on the whole utterance's audio (``prediction_id``: the answer's id in
   the prediction log, for ``POST /v1/feedback``). An utterance is a run of voiced VAD frames (pauses
   shorter than ``end_silence_s`` = 0.5 s inside it) ended by ``end_silence_s`` of non-voice or by ``end``;
   shorter than ``min_utterance_s`` it is dropped, longer than ``max_utterance_s`` it is cut. The server looks
   at audio 0.1 s at a time (and at every hop), so a final comes at most 0.1 s after its ending silence is
   complete;
6. client → ``{"type": "end"}``: the server sends the remaining finals, ``{"type": "done", "utterances": n}`` and
   closes normally (1000).

Malformed input is answered with ``{"type": "error", "code", "message"}`` and the stream continues wherever it can
(the bad message or frame is dropped): ``not_started`` (audio before start), ``bad_json``, ``bad_message`` (not an
object, no type, too long), ``unknown_type``, ``bad_start`` (rate, encoding, hop or window out of range),
``already_started``, ``not_ready`` (no model loaded yet; send start again), ``bad_frame`` (a byte count that is
not whole samples), ``invalid_audio`` (NaN or Inf float32), ``frame_too_large``. The session asks to close (1008,
policy violation) only when it cannot go on: ``stream_too_long`` or ``too_many_errors``.

Voice activity is :mod:`ser.timeline`'s: webrtcvad on 16-bit PCM frames with the same energy gate
(:func:`~ser.vad.to_pcm16`, :func:`~ser.vad.frame_levels_db`, :class:`VadConfig`), run on
the model-rate stream (or a 16 kHz copy when webrtcvad does not take the model's rate); one ``webrtcvad.Vad`` per
session keeps its adaptive state across frames. Frames are queued and analysed 0.1 s at a time
(:data:`~ser.serve.stream.session.PENDING_S`): how small the client's frames are changes nothing in the answers.
Times are seconds from the first sample of the stream, counted on the model-rate stream.
"""

from ser.serve.stream.protocol import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    CLOSE_UNSUPPORTED,
    DEFAULT_HOP_S,
    DEFAULT_WINDOW_S,
    ENCODINGS,
    MAX_RATE,
    MAX_TEXT_CHARS,
    MIN_RATE,
    Close,
    StreamConfig,
    StreamError,
    StreamLimits,
    decode_frame,
    encode_frame,
    error_message,
    parse_start,
)
from ser.serve.stream.segmentation import Endpointer, FrameVad, SampleBuffer
from ser.serve.stream.session import PredictorLike, StreamSession

__all__ = [
    "CLOSE_INTERNAL",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TRY_AGAIN",
    "CLOSE_UNSUPPORTED",
    "DEFAULT_HOP_S",
    "DEFAULT_WINDOW_S",
    "ENCODINGS",
    "MAX_RATE",
    "MAX_TEXT_CHARS",
    "MIN_RATE",
    "Close",
    "Endpointer",
    "FrameVad",
    "PredictorLike",
    "SampleBuffer",
    "StreamConfig",
    "StreamError",
    "StreamLimits",
    "StreamSession",
    "decode_frame",
    "encode_frame",
    "error_message",
    "parse_start",
]
