"""Training of the torch models on in-memory datasets of precomputed features (or waveforms).

``ArrayDataset`` (:mod:`ser.train.data`) holds the clips; ``fit`` (:mod:`ser.train.trainer`) trains a model chosen
by ``TrainConfig.model`` and returns a ``TrainResult``; ``predict_proba`` scores a dataset.
"""

from ser.train.data import ArrayDataset, fixed_windows, pad_collate, random_crop
from ser.train.trainer import (
    TrainConfig,
    TrainResult,
    class_weights,
    evaluate,
    fit,
    predict_logits,
    predict_proba,
    resolve_device,
    uar,
)

__all__ = [
    "ArrayDataset",
    "TrainConfig",
    "TrainResult",
    "class_weights",
    "evaluate",
    "fit",
    "fixed_windows",
    "pad_collate",
    "predict_logits",
    "predict_proba",
    "random_crop",
    "resolve_device",
    "uar",
]
