"""Models by name: build, count, time, save and load.

``build_model(name, n_classes, n_features, seed=..., **params)`` returns a torch :class:`~ser.models.base.SerModel`
(``cnn``, ``tdnn``, ``rnn``, ``crnn``, ``ssl``) or the scikit-learn :class:`~ser.models.classical.ClassicalModel`
(``classical``). Unknown names or parameters raise :class:`~ser.errors.ConfigError` with a one-line reason.
"""

from __future__ import annotations

import inspect
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from ser import TARGET_SR
from ser.errors import ConfigError, SerError
from ser.io import atomic_path
from ser.models.base import SerModel
from ser.models.classical import ClassicalModel
from ser.models.cnn import CNN, TDNN
from ser.models.crnn import CRNN
from ser.models.ensemble import Ensemble
from ser.models.rnn import RNN
from ser.models.ssl import SSLClassifier

MODELS: dict[str, type[SerModel] | type[ClassicalModel]] = {
    "cnn": CNN,
    "tdnn": TDNN,
    "rnn": RNN,
    "crnn": CRNN,
    "ssl": SSLClassifier,
    "classical": ClassicalModel,
    "ensemble": Ensemble,
}
"""Model name → class. Frame models take ``(B, F, T)``; ``ssl`` takes ``(B, N)``; ``classical`` takes ``(N, D)``."""

FRAMES_PER_SECOND = 100
"""Frame rate of the frame features (hop 160 samples at 16 kHz = 10 ms)."""

MODEL_FORMAT = "ser-torch/1"
"""Format of a saved torch model (``model.pt``); distinct from the exported model folder's ``ser-model/N``."""
READABLE_MODEL_FORMATS = (MODEL_FORMAT, "ser-model/1")
"""Formats :func:`load_model` reads: files saved before 2026-12 carry the folder's old ``ser-model/1`` string."""


def available_models() -> list[str]:
    return list(MODELS)


def model_params(name: str) -> dict[str, Any]:
    """The tunable parameters of model ``name`` and their defaults."""
    cls = _model_class(name)
    sig = inspect.signature(cls.__init__)
    return {
        k: p.default
        for k, p in sig.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
    }


def _model_class(name: str) -> type[SerModel] | type[ClassicalModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None


def build_model(
    name: str, n_classes: int, n_features: int | None = None, *, seed: int | None = None, **params: Any
) -> SerModel | ClassicalModel:
    """Build model ``name`` for ``n_classes`` classes and ``n_features`` input rows (mel bands, MFCC rows, ...).

    With ``seed`` the weights are initialised deterministically (the global torch RNG is left untouched).
    ``params`` are the model's keyword arguments (see :func:`model_params`).
    """
    cls = _model_class(name)
    known = model_params(name)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"{name}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if cls is ClassicalModel:
        if seed is not None and "seed" not in params:
            params["seed"] = seed
        return ClassicalModel(n_classes, n_features, **params)
    if n_features is None:
        n_features = 1
    try:
        if seed is None:
            return cls(n_classes, n_features, **params)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(n_classes, n_features, **params)
    except SerError:
        raise
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{name}: invalid parameters {params}: {exc}") from exc


def n_params(model: SerModel | ClassicalModel, trainable_only: bool = False) -> int:
    """Parameter count of a torch model, or the learned numbers of a fitted classical model."""
    return int(model.n_params(trainable_only))


def model_spec(model: SerModel) -> dict[str, Any]:
    """What :func:`build_model` needs to rebuild ``model``: name, n_classes, n_features, params."""
    return {"name": model.name, "n_classes": model.n_classes, "n_features": model.n_features, "params": model.hparams}


def save_model(path: str | Path, model: SerModel, extra: dict[str, Any] | None = None) -> Path:
    """Write spec + weights (CPU tensors) + ``extra`` (plain JSON-like values) atomically with ``torch.save``."""
    if not isinstance(model, SerModel):
        raise ConfigError(f"save_model takes a torch model, got {type(model).__name__} (use ClassicalModel.save)")
    blob = {
        "format": MODEL_FORMAT,
        "spec": model_spec(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return Path(path)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[SerModel, dict[str, Any]]:
    """Rebuild a model written by :func:`save_model`; returns ``(model in eval mode, extra)``."""
    path = Path(path)
    if not path.is_file():
        raise SerError(f"model file not found: {path}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise SerError(f"not a readable model file: {path} ({type(exc).__name__})") from exc
    if not isinstance(blob, dict) or blob.get("format") not in READABLE_MODEL_FORMATS:
        raise SerError(f"not a ser model file: {path}")
    spec = blob["spec"]
    model = build_model(spec["name"], spec["n_classes"], spec["n_features"], **spec["params"])
    if not isinstance(model, SerModel):  # save_model writes torch models only
        raise SerError(f"not a ser model file: {path} (its spec names {spec['name']!r}, not a torch model)")
    model.load_state_dict(blob["state_dict"])
    model.to(map_location).eval()
    return model, blob.get("extra", {})


def example_input(model: SerModel, seconds: float = 3.0, batch_size: int = 1) -> torch.Tensor:
    """Random input for ``seconds`` of audio: ``(B, F, 100·s)`` frames or ``(B, 16000·s)`` samples."""
    if model.input_kind == "waveform":
        return torch.randn(batch_size, round(seconds * TARGET_SR))
    return torch.randn(batch_size, model.n_features, round(seconds * FRAMES_PER_SECOND))


def benchmark_forward(
    model: SerModel,
    seconds: float = 3.0,
    batch_size: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Parameter count and measured CPU forward time (eval mode, no grad) for a clip of ``seconds`` (3 s = 300 frames).

    Returns ``n_params``, ``input_shape``, ``threads``, ``ms_median``, ``ms_mean``, ``ms_min`` (per batch) and
    ``real_time_factor`` (median time / audio duration per clip; < 1 is faster than real time).
    """
    if repeats < 1:
        raise ConfigError("repeats must be at least 1")
    prev_threads = torch.get_num_threads()
    was_training = model.training
    device = next(model.parameters()).device
    x = example_input(model, seconds, batch_size).to(device)
    times = []
    try:
        if num_threads:
            torch.set_num_threads(num_threads)
        model.eval()
        with torch.inference_mode():
            for i in range(warmup + repeats):
                t0 = time.perf_counter()
                model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        model.train(was_training)
        torch.set_num_threads(prev_threads)
    med = statistics.median(times)
    return {
        "model": model.name,
        "n_params": n_params(model),
        "input_shape": list(x.shape),
        "threads": num_threads or prev_threads,
        "ms_median": med,
        "ms_mean": statistics.fmean(times),
        "ms_min": min(times),
        "real_time_factor": med / (seconds * 1000.0 * batch_size),
    }
