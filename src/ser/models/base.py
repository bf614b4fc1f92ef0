"""``SerModel``: the base of every torch model in :mod:`ser.models`.

Input convention of every frame model: ``x`` of shape ``(B, F, T)`` — ``F`` feature rows (mel bands, or MFCC +
deltas) by ``T`` frames of 10 ms, exactly the layout ``ser.features.frames`` returns with a batch axis in front —
and optional ``lengths`` of shape ``(B,)``: the number of valid frames of each clip (``None`` = all ``T``). Frames at
``t >= lengths[b]`` are padding: they are zeroed after every layer and left out of every pooling, so a padded batch
gives the same logits (in ``eval()`` mode) as each clip on its own. Output: logits ``(B, n_classes)``; ``embed``
returns the pooled utterance embedding before the head. The shared layers are in :mod:`ser.models.layers`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from ser.errors import ConfigError
from ser.models.layers import full_lengths


class SerModel(nn.Module):
    """Base of the torch models: remembers its constructor arguments so it can be rebuilt from a checkpoint."""

    name: ClassVar[str] = ""
    input_kind: ClassVar[Literal["frames", "waveform"]] = "frames"
    """``frames``: ``(B, F, T)`` 10 ms frames; ``waveform``: ``(B, N)`` samples at 16 kHz."""
    head: nn.Module
    """The classifier on the embedding; every subclass builds it in its constructor."""

    def __init__(self, n_classes: int, n_features: int, hparams: dict[str, Any]):
        super().__init__()
        if n_classes < 2:
            raise ConfigError(f"{self.name}: n_classes must be at least 2, got {n_classes}")
        if n_features < 1:
            raise ConfigError(f"{self.name}: n_features must be at least 1, got {n_features}")
        self.n_classes = int(n_classes)
        self.n_features = int(n_features)
        self.hparams = dict(hparams)

    def n_params(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def embed(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Logits ``(B, n_classes)`` for ``x`` (see the module docstring for shapes)."""
        return self.head(self.embed(x, lengths))

    def _check_input(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.n_features:
            raise ConfigError(f"{self.name}: expected input (B, {self.n_features}, T), got {tuple(x.shape)}")
        return full_lengths(x, lengths)
