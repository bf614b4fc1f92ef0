"""``ensemble``: late fusion of trained frame models in one module, so a seed or architecture ensemble ships as one
model file and one ONNX graph.

Input as every frame model (``x`` ``(B, F, T)``, ``lengths`` ``(B,)``). Members may read different frame features
of the same frames: the input then stacks those kinds along the feature axis (log-mel rows, then MFCC rows, as
:func:`ser.model_folder.frame_input` builds it) and ``rows`` says which rows each member reads. Output
``(B, n_classes)``: the log of the weighted mean of the members' class probabilities, so ``softmax`` of it is
exactly that mean (what :func:`ser.train.cv.fuse` computes from saved fold probabilities). Cost is the sum of the
members'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from ser.errors import ConfigError
from ser.models.base import SerModel


def _check_rows(rows: Sequence[Sequence[int]] | None, n_members: int, n_features: int) -> list[list[int]] | None:
    if rows is None:
        return None
    msg = f"ensemble: rows must give one [start, stop) range of the {n_features} input rows per member, got {rows!r}"
    try:
        out = [[int(lo), int(hi)] for lo, hi in rows]
    except (TypeError, ValueError):
        raise ConfigError(msg) from None
    if len(out) != n_members or any(not 0 <= lo < hi <= n_features for lo, hi in out):
        raise ConfigError(msg)
    return out


class Ensemble(SerModel):
    """``members``: ``[{"name": "cnn", "params": {...}}, ...]`` (torch frame models); ``weights``: one non-negative
    weight per member (None: equal); ``rows``: the ``[start, stop)`` input rows each member reads (None: all of
    them, every member on the same ``n_features`` input)."""

    name = "ensemble"
    weights: Tensor
    """The members' weights, normalised to sum 1 (a non-persistent buffer)."""

    def __init__(
        self,
        n_classes: int,
        n_features: int,
        *,
        members: Sequence[dict[str, Any]] = (),
        weights: Sequence[float] | None = None,
        rows: Sequence[Sequence[int]] | None = None,
    ):
        from ser.models.factory import build_model

        members = [{"name": str(m["name"]), "params": dict(m.get("params") or {})} for m in members]
        w = [1.0] * len(members) if weights is None else [float(v) for v in weights]
        if len(members) < 2:
            raise ConfigError("ensemble: needs at least two members")
        if len(w) != len(members) or min(w) < 0 or sum(w) <= 0:
            raise ConfigError("ensemble: weights must be non-negative, one per member, not all zero")
        spans = _check_rows(rows, len(members), n_features)
        hparams: dict[str, Any] = {"members": members, "weights": w}
        if spans is not None:  # only then: a seed ensemble's parameters stay what earlier versions load
            hparams["rows"] = spans
        super().__init__(n_classes, n_features, hparams)
        self.spans = [(0, n_features)] * len(members) if spans is None else [tuple(r) for r in spans]
        built = [
            build_model(m["name"], n_classes, hi - lo, **m["params"])
            for m, (lo, hi) in zip(members, self.spans, strict=True)
        ]
        frame_models = [m for m in built if isinstance(m, SerModel) and m.input_kind == "frames"]
        if len(frame_models) != len(built):
            raise ConfigError("ensemble: members must be torch frame models (cnn, tdnn, rnn, crnn)")
        self.members = nn.ModuleList(frame_models)
        self.register_buffer("weights", torch.tensor(w, dtype=torch.float32) / sum(w), persistent=False)

    @classmethod
    def of(
        cls,
        models: Sequence[SerModel],
        weights: Sequence[float] | None = None,
        rows: Sequence[Sequence[int]] | None = None,
    ) -> Ensemble:
        """An ensemble holding the trained ``models`` (their weights copied), in eval mode. Without ``rows`` the
        members must share ``n_features``; with ``rows`` each member's range must span its ``n_features``."""
        if not models:
            raise ConfigError("ensemble: needs at least two members")
        first = models[0]
        if any(m.n_classes != first.n_classes for m in models):
            raise ConfigError("ensemble: members must share n_classes")
        if rows is None:
            if any(m.n_features != first.n_features for m in models):
                raise ConfigError("ensemble: members must share n_features (or say which input rows each reads)")
            n_features = first.n_features
        else:
            if len(rows) != len(models) or any(
                hi - lo != m.n_features for (lo, hi), m in zip(rows, models, strict=True)
            ):
                raise ConfigError("ensemble: each member's input rows must span its n_features")
            n_features = max(hi for _, hi in rows)
        ens = cls(
            first.n_classes,
            n_features,
            members=[{"name": m.name, "params": m.hparams} for m in models],
            weights=weights,
            rows=rows,
        )
        for dst, src in zip(ens.members, models, strict=True):
            dst.load_state_dict(src.state_dict())
        return ens.eval()

    def _models(self) -> list[SerModel]:
        """The members as the frame models the constructor checked them to be (``ModuleList`` forgets the type)."""
        return [cast(SerModel, m) for m in self.members]

    def _inputs(self, x: Tensor) -> list[Tensor]:
        return [x if (lo, hi) == (0, self.n_features) else x[:, lo:hi] for lo, hi in self.spans]

    def embed(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The members' utterance embeddings side by side ``(B, sum of member dims)``."""
        self._check_input(x, lengths)
        return torch.cat([m.embed(xi, lengths) for m, xi in zip(self._models(), self._inputs(x), strict=True)], dim=1)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        self._check_input(x, lengths)
        # a sum of at least two member tensors: never the int start value 0 that sum()'s type allows
        probs = cast(
            Tensor,
            sum(
                self.weights[i] * torch.softmax(m(xi, lengths).float(), dim=1)
                for i, (m, xi) in enumerate(zip(self.members, self._inputs(x), strict=True))
            ),
        )
        return torch.log(probs.clamp_min(1e-12))
