"""Inference on an exported model folder with onnxruntime only (no PyTorch): what serving and ``ser predict`` run.

The folder's layout, its metadata and the preprocessing it records are the contract in :mod:`ser.model_folder`;
this module loads it into a :class:`Predictor`. Shapes: audio ``(n_samples,)`` at the model's rate → features
``(n_features, T)`` → logits ``(n_classes,)`` → probabilities ``softmax(logits / temperature)`` ``(n_classes,)``,
the temperature being the folder's calibration (:func:`ser.model_folder.temperature`; 1 without one). A folder
adapted to a deployment (``ser model adapt``, :mod:`ser.adaptation`) maps its log-mel input rows onto the training
statistics before the graph (:meth:`Predictor.adapt`); a folder without it is served exactly as exported.

Abstention (:func:`decide`): with a threshold, an answer whose top probability is below it is labelled
:data:`UNCERTAIN` instead of a class; its probabilities are still returned.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ser.adaptation import Adaptation, read_adaptation
from ser.errors import AudioError, SerError
from ser.model_folder import (
    INPUT_NAME,
    MODEL_FILE,
    OUTPUT_NAME,
    Preprocessing,
    read_metadata,
    temperature,
    window_starts,
)


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis`` (float64 in, rows sum to 1)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


UNCERTAIN = "uncertain"
"""The label of an abstention: the top probability fell below the caller's threshold (:func:`decide`)."""


def decide(labels: list[str], proba: np.ndarray, abstain_below: float | None = None) -> tuple[str, float, bool]:
    """``(label, confidence, abstained)`` of probabilities ``(n_classes,)`` over ``labels``: the arg-max class and
    its probability, or :data:`UNCERTAIN` (the confidence still the top probability) when ``abstain_below`` is set
    and the top probability is below it."""
    k = int(np.argmax(proba))
    confidence = float(proba[k])
    if abstain_below is not None and confidence < abstain_below:
        return UNCERTAIN, confidence, True
    return labels[k], confidence, False


@dataclass
class Prediction:
    """One clip's result: ``label``, ``probabilities`` (label → p, summing to 1), timing and model identity."""

    label: str
    probabilities: dict[str, float]
    duration_s: float
    processing_ms: float
    model_version: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "duration_s": round(self.duration_s, 4),
            "processing_ms": round(self.processing_ms, 3),
            "model_version": self.model_version,
        }


class Predictor:
    """An exported model loaded with onnxruntime. ``predict`` may be called from many threads at once (an
    onnxruntime session is thread-safe for ``run``).

    ``threads``: onnxruntime intra-op threads (default 1: a server runs one request per core).
    """

    def __init__(self, model_dir: str | Path, *, threads: int | None = 1, warmup: bool = True):
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        self.metadata = read_metadata(self.model_dir)
        self.labels: list[str] = list(self.metadata["labels"])
        self.pre = Preprocessing.from_metadata(self.metadata)
        self.temperature = temperature(self.metadata)
        self.version = str(self.metadata.get("version", "unregistered"))
        self.name = str(self.metadata.get("name", self.model_dir.name))
        self.adaptation: Adaptation | None = read_adaptation(self.model_dir, self.metadata)
        onnx_path = self.model_dir / MODEL_FILE
        if not onnx_path.is_file():
            raise SerError(f"model folder has no {MODEL_FILE}: {self.model_dir}")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise SerError(f"cannot load {onnx_path}: {exc}") from None
        if warmup:  # the first call pays librosa's and onnxruntime's lazy set-up; do it before serving
            rng = np.random.default_rng(0)
            self.predict_proba((0.05 * rng.standard_normal(self.sample_rate)).astype(np.float32))

    @property
    def sample_rate(self) -> int:
        return self.pre.sample_rate

    @property
    def min_samples(self) -> int:
        """Shortest audio the model takes (one analysis window), samples at :attr:`sample_rate`."""
        return int(self.pre.feature_config.get("win_length", 400))

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Logits ``(n_classes,)`` of one ``(n_features, T)`` input, whole clip or window mean as in training
        (the graph's output, before the temperature: for an ensemble, the log of its members' mean probability)."""
        return self._run(self.graph_batch(features)).mean(axis=0)

    def graph_batch(self, features: np.ndarray) -> np.ndarray:
        """The graph's input batch for one clip's model input ``features`` ``(n_features, T)``: the adapted input
        (:meth:`adapt`) as ``(1, n_features, T)``, or its evaluation windows ``(n_windows, n_features, window)``
        (all of equal length, no padding) for a folder evaluated by windows (:func:`graph_batch`)."""
        return graph_batch(self.pre, self.adapt(np.asarray(features, dtype=np.float32)))

    def adapt(self, features: np.ndarray) -> np.ndarray:
        """The graph's input for model input ``features`` ``(n_features, T)``: the folder's target-domain
        adaptation applied (:mod:`ser.adaptation`, a new array), or ``features`` itself when it has none. Every
        serving path reaches the graph through :meth:`logits`, which calls this first."""
        return features if self.adaptation is None else self.adaptation.apply(features)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def predict_proba(self, audio: np.ndarray, *, S: np.ndarray | None = None) -> np.ndarray:
        """Calibrated class probabilities ``(n_classes,)`` (``softmax(logits / temperature)``) of mono float32
        ``audio`` at :attr:`sample_rate`. ``S``: the STFT magnitude of ``audio`` with :meth:`stft_args`, when the
        caller already has it (a stream's overlapping windows)."""
        if S is None:  # the plain call (subclasses that override proba_and_features(audio) keep working)
            return self.proba_and_features(audio)[0]
        return self.proba_and_features(audio, S=S)[0]

    def stft_args(self) -> dict[str, Any]:
        """The STFT parameters of the model's features (see :meth:`Preprocessing.stft_args`)."""
        return self.pre.stft_args()

    def proba_and_features(self, audio: np.ndarray, *, S: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_proba` and the model input it was computed from ``(n_features, T)`` (the monitoring
        statistics summarise the model's own log-mel rows without computing them twice)."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise AudioError(f"audio must be mono (n_samples,), got shape {audio.shape}")
        if not np.all(np.isfinite(audio)):
            raise AudioError("non-finite samples (NaN or Inf)")
        if audio.size < self.min_samples:
            raise AudioError(f"audio too short: {audio.size} samples")
        feats = self.pre.features(audio, S=S)
        return softmax(self.logits(feats) / self.temperature), feats

    def predict(self, audio: np.ndarray) -> Prediction:
        """:class:`Prediction` of mono float32 ``audio`` at :attr:`sample_rate`."""
        t0 = time.perf_counter()
        p = self.predict_proba(audio)
        return self.make_prediction(p, audio.size / self.sample_rate, (time.perf_counter() - t0) * 1000.0)

    def make_prediction(self, proba: np.ndarray, duration_s: float, processing_ms: float) -> Prediction:
        probs = {label: float(v) for label, v in zip(self.labels, proba, strict=True)}
        return Prediction(self.labels[int(np.argmax(proba))], probs, duration_s, processing_ms, self.version)

    def predict_file(self, path: str | Path) -> Prediction:
        """Decode any file libsndfile reads (resampled to the model's rate, mono) and predict it."""
        from ser.audio import load_audio

        t0 = time.perf_counter()
        audio = load_audio(path, self.sample_rate)
        p = self.predict_proba(audio)
        return self.make_prediction(p, audio.size / self.sample_rate, (time.perf_counter() - t0) * 1000.0)


def graph_batch(pre: Preprocessing, x: np.ndarray) -> np.ndarray:
    """The graph input batch of one clip's (already adapted) model input ``x`` ``(n_features, T)`` under the
    folder's evaluation mode: ``x[None]``, or the stacked windows of ``pre.window`` frames every ``pre.hop`` when
    ``pre.eval_mode == "windows"`` and the clip holds more than one. The logits are the batch's mean."""
    x = np.asarray(x, dtype=np.float32)
    if pre.eval_mode == "windows":
        starts = window_starts(x.shape[1], pre.window, pre.hop)
        if len(starts) > 1:
            return np.stack([x[:, s : s + pre.window] for s in starts])
    return x[None]


def default_threads() -> int:
    """onnxruntime threads for a CLI run: all cores (a server uses 1 per request)."""
    return max(1, os.cpu_count() or 1)
