"""``ensemble``: late fusion of trained frame models in one module, so a seed ensemble ships as one model file and
one ONNX graph.

Input as every frame model (``x`` ``(B, F, T)``, ``lengths`` ``(B,)``). Output ``(B, n_classes)``: the log of the
weighted mean of the members' class probabilities, so ``softmax`` of it is exactly that mean (what
:func:`ser.train.cv.fuse` computes from saved fold probabilities). Cost is the sum of the members'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ser.errors import ConfigError
from ser.models.cnn import SerModel


class Ensemble(SerModel):
    """``members``: ``[{"name": "cnn", "params": {...}}, ...]`` (frame models of the same input);
    ``weights``: one non-negative weight per member (None: equal)."""

    name = "ensemble"

    def __init__(
        self,
        n_classes: int,
        n_features: int,
        *,
        members: Sequence[dict[str, Any]] = (),
        weights: Sequence[float] | None = None,
    ):
        from ser.models.registry import build_model

        members = [{"name": str(m["name"]), "params": dict(m.get("params") or {})} for m in members]
        w = [1.0] * len(members) if weights is None else [float(v) for v in weights]
        if len(members) < 2:
            raise ConfigError("ensemble: needs at least two members")
        if len(w) != len(members) or min(w) < 0 or sum(w) <= 0:
            raise ConfigError("ensemble: weights must be non-negative, one per member, not all zero")
        super().__init__(n_classes, n_features, {"members": members, "weights": w})
        built = [build_model(m["name"], n_classes, n_features, **m["params"]) for m in members]
        if any(not isinstance(m, SerModel) or m.input_kind != "frames" for m in built):
            raise ConfigError("ensemble: members must be torch frame models (cnn, tdnn, rnn, crnn)")
        self.members = nn.ModuleList(built)
        self.register_buffer("weights", torch.tensor(w, dtype=torch.float32) / sum(w), persistent=False)

    @classmethod
    def of(cls, models: Sequence[SerModel], weights: Sequence[float] | None = None) -> Ensemble:
        """An ensemble holding the trained ``models`` (their weights copied), in eval mode."""
        if not models:
            raise ConfigError("ensemble: needs at least two members")
        first = models[0]
        if any(m.n_classes != first.n_classes or m.n_features != first.n_features for m in models):
            raise ConfigError("ensemble: members must share n_classes and n_features")
        ens = cls(
            first.n_classes,
            first.n_features,
            members=[{"name": m.name, "params": m.hparams} for m in models],
            weights=weights,
        )
        for dst, src in zip(ens.members, models, strict=True):
            dst.load_state_dict(src.state_dict())
        return ens.eval()

    def embed(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The members' utterance embeddings side by side ``(B, sum of member dims)``."""
        return torch.cat([m.embed(x, lengths) for m in self.members], dim=1)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        self._check_input(x, lengths)
        probs = sum(self.weights[i] * torch.softmax(m(x, lengths).float(), dim=1) for i, m in enumerate(self.members))
        return torch.log(probs.clamp_min(1e-12))
