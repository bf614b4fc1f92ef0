"""Everything that trains a model.

``ArrayDataset`` (:mod:`ser.train.data`) holds the clips; ``fit`` (:mod:`ser.train.trainer`, checkpoints in
:mod:`ser.train.checkpoint`) trains a model chosen by ``TrainConfig.model`` and returns a ``TrainResult``;
``predict_proba`` scores a dataset. Recipes (:mod:`ser.train.recipes`) are :mod:`ser.train.spec` objects;
:mod:`ser.train.cv` cross-validates them speaker-independently and fits the model that ships,
:mod:`ser.train.distil` distils a teacher recipe into a cheap student (per fold, and for the model that ships),
:mod:`ser.train.crosscorpus` trains on one corpus and tests on another, :mod:`ser.train.tune` tunes a recipe with
Optuna (search space: :mod:`ser.train.tune_space`, objective: :mod:`ser.train.tune_objective`).
"""

from ser.train.data import ArrayDataset, fixed_windows, pad_collate, random_crop
from ser.train.predict import evaluate, predict_logits, predict_proba
from ser.train.trainer import TrainConfig, TrainResult, class_weights, fit, resolve_device

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
]
