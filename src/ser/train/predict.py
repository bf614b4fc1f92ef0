"""Scoring torch models on datasets: logits and probabilities in dataset order (whole clips or window means), and
the loss / UAR / accuracy the trainer validates on. No training here; :mod:`ser.train.trainer` uses it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ser import TARGET_SR
from ser.errors import ConfigError, SerError
from ser.models.base import SerModel
from ser.train.data import ArrayDataset, eval_batches

FRAME_HOP = TARGET_SR // 100
"""Samples per 10 ms frame."""


def time_scale(model: SerModel) -> int:
    """Samples per frame of the model's input: 1 for frame models, the 10 ms hop for waveform models."""
    return FRAME_HOP if model.input_kind == "waveform" else 1


def predict_logits(
    model: SerModel,
    ds: ArrayDataset,
    *,
    batch_size: int = 64,
    eval_mode: Literal["full", "windows"] = "full",
    window: int | None = None,
    hop: int | None = None,
    device: torch.device | str | None = None,
    amp: bool = False,
) -> np.ndarray:
    """Logits ``(N, n_classes)`` in dataset order, model in eval mode, no augmentation.

    ``eval_mode="full"``: each whole clip; ``"windows"``: the mean of logits over fixed windows of ``window``
    frames (default 300) every ``hop`` frames (default half a window).
    """
    check_compatible(model, ds)
    if eval_mode not in ("full", "windows"):
        raise ConfigError(f"eval_mode must be full or windows, got {eval_mode!r}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    scale = time_scale(model)
    win = hop_s = None
    if eval_mode == "windows":
        win = (window or 300) * scale
        hop_s = (hop or max(1, (window or 300) // 2)) * scale
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(ds), model.n_classes, dtype=torch.float64)
    counts = torch.zeros(len(ds), dtype=torch.float64)
    use_amp = amp and device.type == "cuda"
    try:
        with torch.inference_mode():
            for x, lengths, owner in eval_batches(ds, batch_size, win, hop_s):
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                    logits = model(x.to(device), lengths.to(device))
                idx = torch.from_numpy(owner)
                sums.index_add_(0, idx, logits.float().cpu().double())
                counts.index_add_(0, idx, torch.ones(len(owner), dtype=torch.float64))
    finally:
        model.train(was_training)
    return (sums / counts[:, None]).numpy()


def predict_proba(model: SerModel, ds: ArrayDataset, **kwargs: Any) -> np.ndarray:
    """Class probabilities ``(N, n_classes)`` (softmax of :func:`predict_logits`; same keyword arguments)."""
    logits = predict_logits(model, ds, **kwargs)
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def evaluate(model: SerModel, ds: ArrayDataset, **kwargs: Any) -> dict[str, float]:
    """``loss`` (plain cross-entropy), ``uar`` (:func:`ser.evaluate.metrics.uar_score`) and ``accuracy`` of ``model``
    on ``ds``."""
    from ser.evaluate.metrics import uar_score

    logits = predict_logits(model, ds, **kwargs)
    y = ds.labels
    loss = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y)).item()
    pred = logits.argmax(axis=1)
    return {"loss": float(loss), "uar": uar_score(y, pred), "accuracy": float((pred == y).mean())}


def check_compatible(model: SerModel, ds: ArrayDataset) -> None:
    if model.input_kind == "waveform" and not ds.is_waveform:
        raise SerError(f"model {model.name!r} takes waveforms (N,) but the dataset holds (F, T) features")
    if model.input_kind == "frames":
        if ds.is_waveform:
            raise SerError(f"model {model.name!r} takes (F, T) frame features but the dataset holds waveforms")
        if ds.n_features != model.n_features:
            raise SerError(f"model expects {model.n_features} feature rows, the dataset has {ds.n_features}")
    if ds.n_classes > model.n_classes:
        raise SerError(f"dataset has {ds.n_classes} classes, the model {model.n_classes}")
