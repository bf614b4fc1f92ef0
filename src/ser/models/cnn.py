"""Convolutional frame models (``cnn``, ``tdnn``).

Input ``x`` ``(B, F, T)`` frames and ``lengths`` ``(B,)`` as every frame model (see :mod:`ser.models.base`); the
shared layers (masks, pooling, head, :class:`~ser.models.layers.ConvBlock2d`) are in :mod:`ser.models.layers`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ser.errors import ConfigError
from ser.models.base import SerModel
from ser.models.layers import ConvBlock2d, InputNorm, check_pools, length_mask, make_head, make_pool

# ---------------------------------------------------------------------------------------------------------------
# cnn


class CNN(SerModel):
    """2-D CNN over a log-mel spectrogram.

    Input ``x`` ``(B, n_mels, T)`` (``n_features`` = ``n_mels``), ``lengths`` ``(B,)`` in frames.
    A stack of :class:`~ser.models.layers.ConvBlock2d` (default 4 blocks 16-32-64-64 channels; each halves
    frequency, the first three halve time: a 3 s clip leaves 38 frames), the mean over frequency, masked pooling
    over time (``stats``: mean + std by default, or ``attention``/``attentive_stats``) and a small dropout head.
    About 80 k parameters and ~60 M multiply-adds for a 3 s, 64-band clip: a few ms on one CPU core.
    """

    name = "cnn"

    def __init__(
        self,
        n_classes: int,
        n_features: int = 64,
        *,
        channels: Sequence[int] = (16, 32, 64, 64),
        time_pool: Sequence[int] = (2, 2, 2, 1),
        freq_pool: int = 2,
        convs: Sequence[int] | None = None,
        pool: str = "stats",
        hidden: int = 64,
        dropout: float = 0.3,
        input_norm: str = "batch",
    ):
        super().__init__(
            n_classes,
            n_features,
            dict(
                channels=list(channels),
                time_pool=list(time_pool),
                freq_pool=freq_pool,
                convs=None if convs is None else list(convs),
                pool=pool,
                hidden=hidden,
                dropout=dropout,
                input_norm=input_norm,
            ),
        )
        check_pools(channels, time_pool, "time_pool")
        convs = [1] * len(channels) if convs is None else list(convs)
        check_pools(channels, convs, "convs")
        self.norm = InputNorm(n_features, input_norm)
        blocks, c_in = [], 1
        for c_out, tp, nc in zip(channels, time_pool, convs, strict=True):
            blocks.append(ConvBlock2d(c_in, int(c_out), freq_pool, int(tp), int(nc)))
            c_in = int(c_out)
        self.blocks = nn.ModuleList(blocks)
        self.pool = make_pool(pool, c_in)
        self.head = make_head(self.pool.out_dim, hidden, n_classes, dropout)

    def embed(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        lengths = self._check_input(x, lengths)
        h = self.norm(x, length_mask(lengths, x.shape[-1])).unsqueeze(1)  # (B, 1, F, T)
        for block in self.blocks:
            h, lengths = block(h, lengths)
        h = h.mean(dim=2)  # (B, C, T')
        return self.pool(h, length_mask(lengths, h.shape[-1]))


# ---------------------------------------------------------------------------------------------------------------
# tdnn


class SqueezeExcite(nn.Module):
    """Channel gating from the masked mean over time: ``(B, C, T)`` → ``(B, C, T)``."""

    def __init__(self, channels: int, bottleneck: int = 32):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, bottleneck), nn.ReLU(), nn.Linear(bottleneck, channels), nn.Sigmoid()
        )

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        m = mask[:, None, :].to(h.dtype)
        s = (h * m).sum(-1) / m.sum(-1).clamp_min(1.0)
        return h * self.fc(s)[..., None]


class TDNNBlock(nn.Module):
    """Dilated Conv1d → ReLU → BatchNorm (→ squeeze-excitation), padding zeroed; ``(B, C_in, T)`` → ``(B, C, T)``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, se: bool):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.act = nn.ReLU()
        self.bn = nn.BatchNorm1d(c_out)
        self.se = SqueezeExcite(c_out) if se else None

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        m = mask[:, None, :].to(h.dtype)
        h = self.bn(self.act(self.conv(h))) * m
        if self.se is not None:
            h = self.se(h, mask)
        return h


class TDNN(SerModel):
    """Time-delay network (x-vector / ECAPA-lite): 1-D convolutions over time, features as channels.

    Input ``x`` ``(B, F, T)`` (log-mel bands or MFCC + deltas as channels), ``lengths`` ``(B,)`` in frames.
    A 5-frame conv to ``channels``, residual dilated blocks (kernel 3, dilations 2, 3, 4 by default) with
    squeeze-excitation, multi-layer aggregation (1×1 conv over the concatenated block outputs), attentive
    statistics pooling and a small head. Time resolution is kept (no striding), so padding invariance is exact.
    """

    name = "tdnn"

    def __init__(
        self,
        n_classes: int,
        n_features: int = 64,
        *,
        channels: int = 128,
        dilations: Sequence[int] = (2, 3, 4),
        agg_channels: int = 256,
        se: bool = True,
        pool: str = "attentive_stats",
        hidden: int = 128,
        dropout: float = 0.2,
        input_norm: str = "batch",
    ):
        super().__init__(
            n_classes,
            n_features,
            dict(
                channels=channels,
                dilations=list(dilations),
                agg_channels=agg_channels,
                se=se,
                pool=pool,
                hidden=hidden,
                dropout=dropout,
                input_norm=input_norm,
            ),
        )
        if channels < 1 or agg_channels < 1 or not dilations:
            raise ConfigError("tdnn: channels and agg_channels must be positive and dilations non-empty")
        self.norm = InputNorm(n_features, input_norm)
        self.stem = TDNNBlock(n_features, channels, 5, 1, se=False)
        self.blocks = nn.ModuleList(TDNNBlock(channels, channels, 3, int(d), se) for d in dilations)
        self.agg = nn.Sequential(nn.Conv1d(channels * len(self.blocks), agg_channels, 1), nn.ReLU())
        self.pool = make_pool(pool, agg_channels)
        self.head = make_head(self.pool.out_dim, hidden, n_classes, dropout)

    def embed(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        lengths = self._check_input(x, lengths)
        mask = length_mask(lengths, x.shape[-1])
        h = self.stem(self.norm(x, mask), mask)
        outs = []
        for block in self.blocks:
            h = h + block(h, mask)
            outs.append(h)
        h = self.agg(torch.cat(outs, dim=1)) * mask[:, None, :].to(h.dtype)
        return self.pool(h, mask)
