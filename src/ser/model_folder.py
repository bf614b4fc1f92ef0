"""The model-folder contract: what an exported model folder holds and how its input is built.

Export (:mod:`ser.export`) writes a folder, the registry (:mod:`ser.registry`) versions it, training builds its
inputs with :func:`frame_input`, and serving (:mod:`ser.inference`) reads it. They all depend on this module and
on nothing of each other. A *model folder* holds:

- ``model.onnx`` (:data:`MODEL_FILE`): input ``features`` float32 ``(batch, n_features, frames)`` (batch and frames
  dynamic), output ``logits`` float32 ``(batch, n_classes)``;
- ``metadata.json`` (:data:`METADATA_FILE`, format :data:`FORMAT`): ``labels`` (class order of the logits),
  ``sample_rate``, ``input`` (the frame ``kind``, or kinds stacked along the feature axis joined by ``+`` such as
  ``logmel+mfcc``, the full :class:`~ser.features.FeatureConfig` as ``feature_config``, ``trim`` (one of
  :data:`TRIM_MODES`; absent in folders written before 2026-12, which read as ``level``), ``trim_db``,
  ``min_frames``), ``eval`` (``mode`` full / windows, ``window`` and ``hop`` in frames), plus provenance:
  ``name``, ``version``, ``model``, ``training``, ``metrics``, ``code_version``, ``created``;
- ``MODEL_CARD.md`` (:data:`CARD_FILE`);
- optional ``metadata.json["calibration"]``: ``{"method": "temperature", "temperature": T, ...}`` (the ECE before
  and after, what it was fitted on): serving divides the logits by ``T`` before the softmax
  (:func:`temperature`); a folder without it (written before 2026-12) is served with ``T = 1``;
- optional (format 2): ``reference.parquet`` (:data:`REFERENCE_FILE`), the training reference profile the
  monitoring report compares live inputs and answers with (:mod:`ser.monitor.reference`);
- optional (format 2): ``trained_on.txt`` (:data:`TRAINED_ON_FILE`), the content hashes (``pcm_hash`` of the
  validated manifest, :func:`ser.audio.pcm_hash` of the file's native PCM) of every utterance the model was trained
  or cross-validated on, sorted, one per line: the registry's promotion gate checks that no gate utterance is
  among them (:func:`read_trained_on`).
- optional (format 2): ``adaptation.json`` (:data:`ser.adaptation.ADAPTATION_FILE`) with
  ``metadata.json["adaptation"]`` (what it was adapted to, from how many files and seconds, when): the per-row
  statistics of the training data (from ``reference.parquet``) and of unlabelled audio of a deployment, written by
  ``ser model adapt`` (:class:`ser.jobs.adapt.AdaptJob`); serving maps the log-mel input rows from the deployment's
  statistics onto the training ones before the graph (:mod:`ser.adaptation`). Only the metadata entry switches it
  on.

Format versions (``metadata.json["format"]``): ``ser-model/1`` (to 2026-12), ``ser-model/2`` (adds
``format_version``; the folder may hold further files that later stages add, each optional to a reader).
:func:`read_metadata` accepts every version in :data:`READABLE_FORMATS` and returns the metadata with
``format_version`` filled in, so callers never branch on the version string.

The preprocessing is the training code itself: :func:`ser.features.frames.compute` on 16 kHz mono float32
(:data:`ser.TARGET_SR`), then the same silence trim as training (:func:`input_bounds`: by level, by voice activity,
or none). Shapes: audio
``(n_samples,)`` → features ``(n_features, T)`` with ``T = 1 + n_samples // hop`` (10 ms frames) → probabilities
``(n_classes,)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ser import TARGET_SR
from ser.errors import ConfigError, SerError

FORMAT_NAME = "ser-model"
FORMAT_VERSION = 2
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
"""The format written today."""
READABLE_FORMATS = {f"{FORMAT_NAME}/{v}": v for v in range(1, FORMAT_VERSION + 1)}
"""Every format a reader accepts → its version number."""

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
CARD_FILE = "MODEL_CARD.md"
REFERENCE_FILE = "reference.parquet"
TRAINED_ON_FILE = "trained_on.txt"
INPUT_NAME = "features"
OUTPUT_NAME = "logits"


def read_metadata(model_dir: str | Path) -> dict[str, Any]:
    """``metadata.json`` of a model folder, checked for the fields inference needs, with ``format_version`` set.

    Any format in :data:`READABLE_FORMATS` is read; a newer or foreign one is a :class:`~ser.errors.SerError`.
    """
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        raise SerError(f"not a model folder (no {METADATA_FILE}): {model_dir}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SerError(f"{path}: not valid JSON ({exc.msg})") from None
    found = meta.get("format") if isinstance(meta, dict) else None
    version = READABLE_FORMATS.get(found) if isinstance(found, str) else None
    if version is None:
        raise SerError(f"{path}: format {found!r}, expected one of {', '.join(READABLE_FORMATS)}")
    if not meta.get("labels"):
        raise SerError(f"{path}: no labels")
    meta["format_version"] = version
    return meta


def temperature(meta: Mapping[str, Any]) -> float:
    """The temperature serving divides the logits by (``metadata.json["calibration"]``, see
    :mod:`ser.evaluate.calibration`); 1.0 when the folder has no calibration. A calibration that is not a
    positive finite temperature is a :class:`~ser.errors.SerError` (serving it silently unscaled would hide it)."""
    cal = meta.get("calibration")
    if cal is None:
        return 1.0
    t = cal.get("temperature") if isinstance(cal, Mapping) and cal.get("method") == "temperature" else None
    if isinstance(t, bool) or not isinstance(t, int | float) or not np.isfinite(t) or t <= 0:
        raise SerError(f"metadata.json: calibration must be {{'method': 'temperature', 'temperature': T > 0}}: {cal!r}")
    return float(t)


def check_model_dir(model_dir: str | Path) -> Path:
    """``model_dir`` as a Path if it holds ``model.onnx`` and a valid ``metadata.json``."""
    p = Path(model_dir)
    if not (p / MODEL_FILE).is_file():
        raise ConfigError(f"not a model folder (no {MODEL_FILE}): {p}")
    read_metadata(p)
    return p


TRIM_MODES = ("level", "vad", "none")
"""How a model's input is trimmed to the speech (``metadata.json["input"]["trim"]``, a recipe's ``trim``):

- ``level`` (the default, and every folder from before the field): :func:`trim_bounds`, the frames within
  ``trim_db`` dB of the loudest. Noise is as loud as the pauses, so in noise it keeps nearly every frame.
- ``vad``: :func:`vad_bounds`, the first to the last run of voiced frames (at least :data:`VAD_MIN_RUN_FRAMES`)
  of the ``vad`` kind (webrtcvad, :func:`ser.features.frames.voice`) widened by :data:`VAD_PAD_FRAMES`; a clip
  with no such run falls back to ``level``.
- ``none``: every frame (``trim_db`` is ignored).
"""

VAD_PAD_FRAMES = 10
"""Frames (10 ms each) kept before the first and after the last voiced frame of a ``vad`` trim: webrtcvad misses
soft onsets and decays (a breathy start, a fading vowel) by a few frames, so 100 ms keeps them."""


VAD_MIN_RUN_FRAMES = 12
"""Voiced runs shorter than this (frames of 10 ms) do not start or end the span: webrtcvad flags the first frames
of a clip that opens in noise (its noise model starts empty) and isolated frames here and there; a syllable lasts
longer than 120 ms."""


def check_trim(trim: object) -> str:
    """``trim`` if it is one of :data:`TRIM_MODES`, else a :class:`~ser.errors.ConfigError`."""
    if trim not in TRIM_MODES:
        raise ConfigError(f"trim must be one of {', '.join(TRIM_MODES)}, got {trim!r}")
    return str(trim)


def trim_kinds(trim: str) -> tuple[str, ...]:
    """The frame-aligned kinds the trim reads: ``("logmel",)``, plus ``"vad"`` for a ``vad`` trim (a model input
    needs them computed, or read from the feature cache, beside its own kinds)."""
    return ("logmel", "vad") if check_trim(trim) == "vad" else ("logmel",)


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


def vad_bounds(
    voice: np.ndarray, pad: int = VAD_PAD_FRAMES, min_run: int = VAD_MIN_RUN_FRAMES
) -> tuple[int, int] | None:
    """From the start of the first to the end of the last run of at least ``min_run`` voiced frames, widened by
    ``pad`` frames each side (within the clip); ``None`` when no run is that long.

    ``voice``: the ``vad`` kind, ``(1, T)`` (or ``(T,)``) 0/1 flags on the frame grid. Pauses inside the span are
    kept, as the level trim keeps them: only the leading and trailing non-speech goes.
    """
    flags = np.asarray(voice).reshape(-1) > 0.5
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    long = (ends - starts) >= max(1, min_run)
    if not long.any():
        return None
    return max(0, int(starts[long][0]) - pad), min(flags.size, int(ends[long][-1]) + pad)


def input_bounds(feats: Mapping[str, np.ndarray], trim: str, trim_db: float | None) -> tuple[int, int]:
    """The ``[lo, hi)`` frames a model input keeps (see :data:`TRIM_MODES`). ``feats``: the clip's frame kinds,
    ``logmel`` among them, and ``vad`` for a ``vad`` trim.

    When the VAD finds no speech the ``level`` trim decides instead of the whole clip: a clip served to an emotion
    model is meant to hold speech, and webrtcvad misses some (speech below its -50 dBFS gate, a narrow telephone
    band); the level trim still drops the digital silence, and it is what a model saw before this option existed.
    """
    logmel = feats["logmel"]
    if check_trim(trim) == "none":
        return 0, int(logmel.shape[1])
    if trim == "vad":
        if "vad" not in feats:
            raise SerError("a vad trim needs the clip's 'vad' frames (extract the kinds of trim_kinds('vad'))")
        if feats["vad"].shape[-1] != logmel.shape[1]:
            raise SerError(f"vad frames {feats['vad'].shape} do not match the log-mel {logmel.shape}")
        found = vad_bounds(feats["vad"])
        if found is not None:
            return found
    return trim_bounds(logmel, trim_db)


def input_kinds(kind: str) -> tuple[str, ...]:
    """The frame kinds a model input stacks, in row order: ``"logmel"`` → ``("logmel",)``, ``"logmel+mfcc"`` →
    ``("logmel", "mfcc")`` (an ensemble whose members read different features takes them stacked)."""
    from ser.features import FRAME_KINDS

    kinds = tuple(str(kind).split("+"))
    bad = [k for k in kinds if k not in FRAME_KINDS]
    if bad or len(set(kinds)) != len(kinds):
        raise ConfigError(f"model input kind {kind!r}: expected frame kinds ({', '.join(FRAME_KINDS)}) joined by '+'")
    return kinds


def frame_input(
    feats: Mapping[str, np.ndarray], kind: str, trim_db: float | None, min_frames: int = 1, trim: str = "level"
) -> np.ndarray:
    """One clip's model input ``(rows, T')`` from its frame features ``{kind: (rows_k, T)}`` (``logmel`` among them,
    and ``vad`` for ``trim="vad"``).

    The frames are trimmed to :func:`input_bounds` (``trim``: see :data:`TRIM_MODES`; ``level`` uses ``trim_db``),
    each kind of ``kind`` (see :func:`input_kinds`) is padded with its own minimum to at least ``min_frames``
    frames, and the kinds are stacked along the rows. Training (``min_frames=1``) and serving share this function,
    so a model sees the same input in both.
    """
    lo, hi = input_bounds(feats, trim, trim_db)
    blocks = []
    for k in input_kinds(kind):
        x = np.asarray(feats[k][:, lo:hi], dtype=np.float32)
        if x.shape[1] < min_frames:
            pad = np.full((x.shape[0], min_frames - x.shape[1]), x.min(), dtype=np.float32)
            x = np.concatenate([x, pad], axis=1)
        blocks.append(x)
    return np.ascontiguousarray(blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=0))


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
    trim: str = "level"
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
        try:
            trim = check_trim(inp.get("trim", "level"))  # absent: a folder from before the option, level-trimmed
        except ConfigError as exc:
            raise SerError(f"metadata.json: input.{exc}") from None
        return cls(
            kind=str(inp["kind"]),
            feature_config=dict(inp["feature_config"]),
            trim_db=inp.get("trim_db"),
            min_frames=int(inp.get("min_frames", 1)),
            eval_mode=str(ev.get("mode", "full")),
            window=window,
            hop=int(ev.get("hop") or max(1, window // 2)),
            trim=trim,
        )

    @property
    def sample_rate(self) -> int:
        return int(self.feature_config.get("sr", TARGET_SR))

    def features(self, audio: np.ndarray, *, S: np.ndarray | None = None) -> np.ndarray:
        """``(n_features, T)`` float32 model input for mono float32 ``audio`` at :attr:`sample_rate`, trimmed as in
        training and padded (each kind with the clip's own minimum) to at least ``min_frames``
        (:func:`frame_input`). ``S``: the STFT magnitude of ``audio``, when already known (see
        :meth:`stft_args`)."""
        from ser.features import make_config
        from ser.features.frames import compute

        cfg = make_config(self.feature_config)
        kinds = tuple(dict.fromkeys((*trim_kinds(self.trim), *input_kinds(self.kind))))
        feats = compute(np.asarray(audio, dtype=np.float32), cfg, kinds, S=S)
        return frame_input(feats, self.kind, self.trim_db, self.min_frames, self.trim)

    def stft_args(self) -> dict[str, Any]:
        """The STFT parameters of the features (``n_fft``, ``win_length``, ``hop_length``, ``window``), for a caller
        that computes the magnitude itself (:class:`ser.features.streaming.WindowSpectrogram`) and passes it as
        ``S`` to :meth:`features`."""
        from ser.features import make_config

        cfg = make_config(self.feature_config)
        return {"n_fft": cfg.n_fft, "win_length": cfg.win_length, "hop_length": cfg.hop_length, "window": cfg.window}


def write_trained_on(model_dir: str | Path, hashes: list[str] | set[str]) -> Path:
    """Write :data:`TRAINED_ON_FILE` (sorted unique content hashes, one per line) into a model folder."""
    from ser.io import write_text

    lines = sorted({str(h) for h in hashes if str(h)})
    return write_text(Path(model_dir) / TRAINED_ON_FILE, "".join(f"{h}\n" for h in lines))


def read_trained_on(model_dir: str | Path) -> set[str] | None:
    """The content hashes a model folder records it was trained on; ``None`` when it records none (a folder from
    before the file existed: what it saw is unknown)."""
    path = Path(model_dir) / TRAINED_ON_FILE
    if not path.is_file():
        return None
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}
