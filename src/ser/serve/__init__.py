"""Serving: the HTTP API (:mod:`ser.serve.app`, routes in :mod:`ser.serve.routes`), the hot-reloadable model
(:mod:`ser.serve.engine`), real-time streaming (:mod:`ser.serve.stream`) and the emotion timeline of long recordings
(:mod:`ser.timeline`).

Nothing under ``ser.serve`` imports PyTorch: a model is an exported folder run by onnxruntime.
"""

from ser.serve.engine import ModelHolder, ModelNotReady, ReloadResult

__all__ = ["ModelHolder", "ModelNotReady", "ReloadResult"]
