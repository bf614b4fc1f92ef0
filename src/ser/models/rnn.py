"""Recurrent frame model (``rnn``): a bidirectional LSTM or GRU over frame features.

Input ``x`` ``(B, F, T)`` — frame features such as MFCC + deltas (``ser.features.frames.mfcc``, ``F = 3·n_mfcc``)
with a batch axis, the same layout as every frame model — and ``lengths`` ``(B,)`` in frames. The recurrent
layers run on packed sequences, so the backward direction starts at each clip's own last frame and padding never
enters the state; pooling (``mean``, ``attention`` or ``stats``) covers valid frames only.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ser.errors import ConfigError
from ser.models.base import SerModel
from ser.models.layers import InputNorm, length_mask, make_head, make_pool, pooled_lengths


def pool_frames(x: Tensor, lengths: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """Mean of each run of ``stride`` frames over valid frames only: ``(B, F, T)`` → ``(B, F, ceil(T / stride))``.

    A window that runs into padding (or past the end) averages its valid frames alone, so a clip gives the same
    result whatever it is padded to. Returns the pooled frames and their valid lengths ``ceil(lengths / stride)``.
    """
    if stride == 1:
        return x, lengths
    mask = length_mask(lengths, x.shape[-1]).to(x.dtype)[:, None, :]  # (B, 1, T)
    total = F.avg_pool1d(x * mask, stride, stride, ceil_mode=True)
    count = F.avg_pool1d(mask, stride, stride, ceil_mode=True)  # same divisor as ``total``: the ratio is exact
    return total / count.clamp_min(1e-6), pooled_lengths(lengths, stride)


def run_packed(rnn: nn.RNNBase, h: Tensor, lengths: Tensor) -> Tensor:
    """Run a batch-first ``rnn`` over ``h`` ``(B, T, C)`` with valid ``lengths``; padded outputs are zero."""
    packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=h.shape[1])
    return out


def make_rnn(cell: str, n_in: int, hidden: int, layers: int, dropout: float) -> nn.RNNBase:
    if cell not in ("lstm", "gru"):
        raise ConfigError(f"cell must be lstm or gru, got {cell!r}")
    if hidden < 1 or layers < 1:
        raise ConfigError("hidden and layers must be positive")
    cls = nn.LSTM if cell == "lstm" else nn.GRU
    return cls(
        n_in, hidden, num_layers=layers, batch_first=True, bidirectional=True, dropout=dropout if layers > 1 else 0.0
    )


class RNN(SerModel):
    """Bidirectional LSTM/GRU (``cell``) over frames, masked pooling over valid frames, small head.

    Input ``x`` ``(B, F, T)``, ``lengths`` ``(B,)``. Defaults: 2 layers of 128 units per direction, attention
    pooling. ``frame_pool`` > 1 averages runs of that many frames before the recurrent layers (the sequence, and
    so the sequential cost, shrinks by that factor; 10 ms MFCC frames pooled by 3 give 30 ms steps).
    """

    name = "rnn"

    def __init__(
        self,
        n_classes: int,
        n_features: int = 60,
        *,
        cell: str = "lstm",
        hidden: int = 128,
        layers: int = 2,
        pool: str = "attention",
        head_hidden: int = 64,
        dropout: float = 0.2,
        input_norm: str = "batch",
        frame_pool: int = 1,
    ):
        super().__init__(
            n_classes,
            n_features,
            dict(
                cell=cell,
                hidden=hidden,
                layers=layers,
                pool=pool,
                head_hidden=head_hidden,
                dropout=dropout,
                input_norm=input_norm,
                frame_pool=frame_pool,
            ),
        )
        if int(frame_pool) < 1:
            raise ConfigError(f"frame_pool must be a positive integer, got {frame_pool!r}")
        self.frame_pool = int(frame_pool)
        self.norm = InputNorm(n_features, input_norm)
        self.rnn = make_rnn(cell, n_features, hidden, layers, dropout)
        self.pool = make_pool(pool, 2 * hidden)
        self.head = make_head(self.pool.out_dim, head_hidden, n_classes, dropout)

    def embed(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        lengths = self._check_input(x, lengths)
        h = self.norm(x, length_mask(lengths, x.shape[-1]))
        h, lengths = pool_frames(h, lengths, self.frame_pool)  # (B, F, T')
        h = run_packed(self.rnn, h.transpose(1, 2), lengths).transpose(1, 2)  # (B, 2H, T')
        return self.pool(h, length_mask(lengths, h.shape[-1]))
