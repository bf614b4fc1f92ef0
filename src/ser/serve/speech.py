"""Is there speech to classify? The gate in front of a clip's prediction (``/v1/predict``, each batch item,
``ser predict``): a clip that is mostly clipping, or holds no voice, gets no emotion at all instead of a confident
one the model would invent (an untrained-on input such as 3 s of digital silence comes out "sad" at 0.9999).

Voice is found by the VAD the stream and the timeline use (:func:`ser.timeline.segment`: webrtcvad plus an
energy gate, short pauses merged, segments under 0.25 s dropped), with the energy gate at -60 dBFS instead of the
timeline's -50: the quietest RAVDESS speakers (actors 9 and 20, peaks near -42 dBFS) speak below -50 dBFS, and
every one of RAVDESS's 1440 clips has at least 0.42 s of voice at -60. webrtcvad takes steady tones (a 440 Hz
sine, mains hum) for voice: such a clip still gets a label.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np

from ser.errors import AudioError, Cancelled
from ser.inference import decide
from ser.timeline import VadConfig, segment

Reason = Literal["no_speech", "clipped"]

SPEECH_VAD = VadConfig(min_level_db=-60.0)
"""The VAD of the gate: the timeline's, with the energy gate at -60 dBFS (see the module docstring)."""
MIN_SPEECH_S = 0.25
"""Least voiced time (s) for a clip to count as speech (one VAD segment)."""
MAX_CLIPPED = 0.5
"""Largest fraction of samples at full scale (:data:`ser.audio.FULL_SCALE`) a clip may hold and be classified."""


def voiced_seconds(audio: np.ndarray, sr: int, vad: VadConfig = SPEECH_VAD) -> float:
    """Seconds of voice in mono ``audio`` ``(n,)`` at ``sr`` Hz (sum of the VAD's segments)."""
    segs = segment(audio, sr, vad)
    return float((segs[:, 1] - segs[:, 0]).sum()) if len(segs) else 0.0


def assess(
    audio: np.ndarray,
    sr: int,
    clipped: float,
    *,
    vad: VadConfig = SPEECH_VAD,
    min_speech_s: float = MIN_SPEECH_S,
    max_clipped: float = MAX_CLIPPED,
) -> Reason | None:
    """Why ``audio`` ``(n,)`` at ``sr`` Hz must not be classified: ``"clipped"`` when more than ``max_clipped``
    of its samples (``clipped``, a fraction measured on the decoded file) are at full scale, ``"no_speech"`` when
    it holds less than ``min_speech_s`` of voice; None when it holds speech."""
    if clipped > max_clipped:
        return "clipped"
    if voiced_seconds(audio, sr, vad) < min_speech_s - 1e-9:
        return "no_speech"
    return None


def predict_gated(
    predictor: Any,
    audio: np.ndarray,
    clipped: float,
    t0: float,
    should_stop: Any = None,
    proba: Any = None,
    *,
    abstain_below: float | None = None,
) -> dict[str, Any]:
    """One clip's answer: ``label``, ``confidence``, ``probabilities``, ``speech``, ``reason``, ``abstained``,
    ``duration_s``, ``processing_ms`` (since ``t0``, a ``time.perf_counter()``), ``model_version``. ``speech``
    false (with the ``reason``) leaves the label, confidence and probabilities None and runs no inference. With
    ``abstain_below``, a top probability under it gives the label ``"uncertain"`` and ``abstained`` true
    (:func:`ser.inference.decide`; the probabilities are still returned).

    ``proba``: the ``predict_proba`` to call (default the predictor's; the service passes one that keeps the
    model input for its monitoring statistics, :class:`ser.serve.monitoring.FeatureTap`).

    Raises :class:`AudioError` for a clip too short for the model (before the gate, as before it existed) and
    :class:`ser.errors.Cancelled` when ``should_stop()`` is true before inference."""
    sr = int(predictor.sample_rate)
    min_samples = int(getattr(predictor, "min_samples", 0))
    if audio.size < min_samples:
        raise AudioError(f"audio too short: {audio.size} samples")
    reason = assess(audio, sr, clipped)
    out: dict[str, Any] = {"label": None, "confidence": None, "probabilities": None, "speech": reason is None}
    out["reason"] = reason
    out["abstained"] = False
    if reason is None:
        if should_stop is not None and should_stop():
            raise Cancelled("inference stopped: the request was cancelled")
        p = (proba or predictor.predict_proba)(audio)
        out["label"], out["confidence"], out["abstained"] = decide(list(predictor.labels), p, abstain_below)
        out["probabilities"] = {lab: float(v) for lab, v in zip(predictor.labels, p, strict=True)}
    out["duration_s"] = round(audio.size / sr, 4)
    out["processing_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
    out["model_version"] = predictor.version
    return out
