"""Emotion classifiers, chosen by name: ``cnn``, ``tdnn``, ``rnn``, ``crnn`` (torch, frame features), ``ssl``
(torch, raw waveform through a local self-supervised backbone) and ``classical`` (scikit-learn on functionals).

Frame models take ``x`` ``(B, F, T)`` (features × 10 ms frames) and ``lengths`` ``(B,)`` and return logits
``(B, n_classes)``; padding never changes the result. See :mod:`ser.models.factory` for building, saving,
loading and timing models.
"""

from ser.models.base import SerModel
from ser.models.classical import ClassicalModel
from ser.models.cnn import CNN, TDNN
from ser.models.crnn import CRNN
from ser.models.factory import (
    MODELS,
    available_models,
    benchmark_forward,
    build_model,
    load_model,
    model_params,
    model_spec,
    n_params,
    save_model,
)
from ser.models.rnn import RNN
from ser.models.ssl import SSLClassifier

__all__ = [
    "CNN",
    "CRNN",
    "MODELS",
    "RNN",
    "TDNN",
    "ClassicalModel",
    "SSLClassifier",
    "SerModel",
    "available_models",
    "benchmark_forward",
    "build_model",
    "load_model",
    "model_params",
    "model_spec",
    "n_params",
    "save_model",
]
