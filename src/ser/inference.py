"""Inference on an exported model folder with onnxruntime only (no PyTorch): what serving and ``ser predict`` run.

A *model folder* (written by :mod:`ser.export`, registered by :mod:`ser.registry`) holds:

- ``model.onnx``: input ``features`` float32 ``(batch, n_features, frames)`` (batch and frames dynamic), output
  ``logits`` float32 ``(batch, n_classes)``;
- ``metadata.json`` (:data:`FORMAT`): ``labels`` (class order of the logits), ``sample_rate``, ``input`` (the
  frame ``kind``, or kinds stacked along the feature axis joined by ``+`` such as ``logmel+mfcc``, the full
  :class:`~ser.features.FeatureConfig` as ``feature_config``, ``trim_db``,
  ``min_frames``), ``eval`` (``mode`` full / windows, ``window`` and ``hop`` in frames), plus provenance:
  ``name``, ``version``, ``model``, ``training``, ``metrics``, ``code_version``, ``created``;
- ``MODEL_CARD.md``.

The preprocessing is the training code itself: :func:`ser.features.frames.compute` on 16 kHz mono float32, then
the same silence trim as training (:func:`trim_bounds`). Shapes: audio ``(n_samples,)`` → features
``(n_features, T)`` with ``T = 1 + n_samples // hop`` (10 ms frames) → probabilities ``(n_classes,)``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ser.errors import AudioError, ConfigError, SerError

FORMAT = "ser-model/1"
MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
CARD_FILE = "MODEL_CARD.md"
INPUT_NAME = "features"
OUTPUT_NAME = "logits"


def trim_bounds(logmel: np.ndarray, top_db: float | None) -> tuple[int, int]:
    """First and one-past-last frame whose loudest band is within ``top_db`` dB of the clip's loudest frame.

    ``logmel`` ``(n_mels, T)`` in dB. ``top_db=None`` keeps every frame.
    """
    T = logmel.shape[1]
    if top_db is None or T == 0:
        return 0, T
    level = logmel.max(axis=0)
    keep = np.flatnonzero(level >= level.max() - top_db)
    return int(keep[0]), int(keep[-1]) + 1


def input_kinds(kind: str) -> tuple[str, ...]:
    """The frame kinds a model input stacks, in row order: ``"logmel"`` → ``("logmel",)``, ``"logmel+mfcc"`` →
    ``("logmel", "mfcc")`` (an ensemble whose members read different features takes them stacked)."""
    from ser.features import FRAME_KINDS

    kinds = tuple(str(kind).split("+"))
    bad = [k for k in kinds if k not in FRAME_KINDS]
    if bad or len(set(kinds)) != len(kinds):
        raise ConfigError(f"model input kind {kind!r}: expected frame kinds ({', '.join(FRAME_KINDS)}) joined by '+'")
    return kinds


def frame_input(feats: Mapping[str, np.ndarray], kind: str, trim_db: float | None, min_frames: int = 1) -> np.ndarray:
    """One clip's model input ``(rows, T')`` from its frame features ``{kind: (rows_k, T)}`` (``logmel`` among them).

    The frames are trimmed to :func:`trim_bounds` of the log-mel, each kind of ``kind`` (see :func:`input_kinds`)
    is padded with its own minimum to at least ``min_frames`` frames, and the kinds are stacked along the rows.
    Training (``min_frames=1``) and serving share this function, so a model sees the same input in both.
    """
    lo, hi = trim_bounds(feats["logmel"], trim_db)
    blocks = []
    for k in input_kinds(kind):
        x = np.asarray(feats[k][:, lo:hi], dtype=np.float32)
        if x.shape[1] < min_frames:
            pad = np.full((x.shape[0], min_frames - x.shape[1]), x.min(), dtype=np.float32)
            x = np.concatenate([x, pad], axis=1)
        blocks.append(x)
    return np.ascontiguousarray(blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=0))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis`` (float64 in, rows sum to 1)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def window_starts(n_frames: int, window: int, hop: int) -> list[int]:
    """Start frames of fixed windows covering ``n_frames`` (one window when the clip is shorter; the last window
    is aligned to the end so no frame is left out)."""
    if n_frames <= window:
        return [0]
    starts = list(range(0, n_frames - window + 1, hop))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return starts


@dataclass(frozen=True)
class Preprocessing:
    """How audio becomes the model's input, read from ``metadata.json['input']`` and ``['eval']``."""

    kind: str
    feature_config: dict[str, Any]
    trim_db: float | None = 40.0
    min_frames: int = 1
    eval_mode: str = "full"
    window: int = 300
    hop: int = 150

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Preprocessing:
        inp, ev = meta.get("input", {}), meta.get("eval", {})
        if "kind" not in inp or "feature_config" not in inp:
            raise SerError("metadata.json: input.kind and input.feature_config are required")
        try:
            input_kinds(inp["kind"])
        except ConfigError as exc:
            raise SerError(f"metadata.json: {exc}") from None
        window = int(ev.get("window") or 300)
        return cls(
            kind=str(inp["kind"]),
            feature_config=dict(inp["feature_config"]),
            trim_db=inp.get("trim_db"),
            min_frames=int(inp.get("min_frames", 1)),
            eval_mode=str(ev.get("mode", "full")),
            window=window,
            hop=int(ev.get("hop") or max(1, window // 2)),
        )

    @property
    def sample_rate(self) -> int:
        return int(self.feature_config.get("sr", 16000))

    def features(self, audio: np.ndarray) -> np.ndarray:
        """``(n_features, T)`` float32 model input for mono float32 ``audio`` at :attr:`sample_rate`, trimmed as in
        training and padded (each kind with the clip's own minimum) to at least ``min_frames``
        (:func:`frame_input`)."""
        from ser.features import make_config
        from ser.features.frames import compute

        cfg = make_config(self.feature_config)
        kinds = tuple(dict.fromkeys(("logmel", *input_kinds(self.kind))))
        feats = compute(np.asarray(audio, dtype=np.float32), cfg, kinds)
        return frame_input(feats, self.kind, self.trim_db, self.min_frames)


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


def read_metadata(model_dir: str | Path) -> dict[str, Any]:
    """``metadata.json`` of a model folder, checked for the fields inference needs."""
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        raise SerError(f"not a model folder (no {METADATA_FILE}): {model_dir}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SerError(f"{path}: not valid JSON ({exc.msg})") from None
    if meta.get("format") != FORMAT:
        raise SerError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if not meta.get("labels"):
        raise SerError(f"{path}: no labels")
    return meta


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
        self.version = str(self.metadata.get("version", "unregistered"))
        self.name = str(self.metadata.get("name", self.model_dir.name))
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

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Logits ``(n_classes,)`` of one ``(n_features, T)`` input, whole clip or window mean as in training."""
        x = np.asarray(features, dtype=np.float32)
        if self.pre.eval_mode == "windows":
            starts = window_starts(x.shape[1], self.pre.window, self.pre.hop)
            if len(starts) > 1:
                batch = np.stack([x[:, s : s + self.pre.window] for s in starts])
                return self._run(batch).mean(axis=0)
        return self._run(x[None])[0]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def predict_proba(self, audio: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n_classes,)`` of mono float32 ``audio`` at :attr:`sample_rate`."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise AudioError(f"audio must be mono (n_samples,), got shape {audio.shape}")
        if not np.all(np.isfinite(audio)):
            raise AudioError("non-finite samples (NaN or Inf)")
        if audio.size < int(self.pre.feature_config.get("win_length", 400)):
            raise AudioError(f"audio too short: {audio.size} samples")
        return softmax(self.logits(self.pre.features(audio)))

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


def default_threads() -> int:
    """onnxruntime threads for a CLI run: all cores (a server uses 1 per request)."""
    return max(1, os.cpu_count() or 1)


def check_model_dir(model_dir: str | Path) -> Path:
    """``model_dir`` as a Path if it holds ``model.onnx`` and a valid ``metadata.json``."""
    p = Path(model_dir)
    if not (p / MODEL_FILE).is_file():
        raise ConfigError(f"not a model folder (no {MODEL_FILE}): {p}")
    read_metadata(p)
    return p
