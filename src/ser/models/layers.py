"""Layers the torch models share: length masks, masked statistics, input normalisation, pooling over valid frames,
the classifier head and the 2-D conv block (see :mod:`ser.models.base` for the input convention: ``(B, F, T)``
frames with valid ``lengths`` ``(B,)``; padding never changes a result).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeAlias

import torch
from torch import Tensor, nn

from ser.errors import ConfigError


def full_lengths(x: Tensor, lengths: Tensor | None) -> Tensor:
    """``lengths`` as a long tensor on ``x``'s device, or every clip at full length ``x.shape[-1]``."""
    if lengths is None:
        return torch.full((x.shape[0],), x.shape[-1], dtype=torch.long, device=x.device)
    return lengths.to(device=x.device, dtype=torch.long).clamp(1, x.shape[-1])


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean mask ``(B, max_len)``: True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def pooled_lengths(lengths: Tensor, stride: int) -> Tensor:
    """Valid lengths after a ``ceil_mode`` pooling of ``stride`` along time."""
    return torch.div(lengths + stride - 1, stride, rounding_mode="floor")


def masked_mean_std(h: Tensor, mask: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of ``h`` ``(B, C, T)`` over the valid frames of ``mask`` ``(B, T)``, in float32
    (safe under float16 autocast)."""
    h = h.float()
    m = mask[:, None, :].to(h.dtype)
    n = m.sum(-1).clamp_min(1.0)
    mean = (h * m).sum(-1) / n
    var = (((h - mean[..., None]) ** 2) * m).sum(-1) / n
    return mean, var.clamp_min(eps).sqrt()


class InputNorm(nn.Module):
    """Normalises the input features, per feature row.

    ``batch``: BatchNorm over the features (learned global statistics, an affine map in ``eval()``);
    ``utterance``: mean/variance of each clip over its valid frames (removes channel and level offsets);
    ``none``: identity. Padding frames come out as zeros.
    """

    def __init__(self, n_features: int, kind: str = "batch"):
        super().__init__()
        if kind not in ("batch", "utterance", "none"):
            raise ConfigError(f"input_norm must be batch, utterance or none, got {kind!r}")
        self.kind = kind
        self.bn = nn.BatchNorm1d(n_features) if kind == "batch" else None

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask[:, None, :].to(x.dtype)
        x = x * m
        if self.kind == "batch":
            assert self.bn is not None  # built exactly when kind == "batch"
            x = self.bn(x)
        elif self.kind == "utterance":
            mean, std = masked_mean_std(x, mask)
            x = (x - mean[..., None]) / std[..., None]
        return x * m


class StatsPool(nn.Module):
    """Mean and standard deviation over valid frames: ``(B, C, T)`` → ``(B, 2C)`` (float32)."""

    def __init__(self, channels: int):
        super().__init__()
        self.out_dim = 2 * channels

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        mean, std = masked_mean_std(h, mask)
        return torch.cat([mean, std], dim=1)


class MeanPool(nn.Module):
    """Mean over valid frames: ``(B, C, T)`` → ``(B, C)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.out_dim = channels

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        h = h.float()
        m = mask[:, None, :].to(h.dtype)
        return (h * m).sum(-1) / m.sum(-1).clamp_min(1.0)


class AttentivePool(nn.Module):
    """Attention over valid frames: ``(B, C, T)`` → weighted mean ``(B, C)``, or mean + std ``(B, 2C)``.

    With ``context`` (ECAPA-style) the attention also sees the clip's global mean and std.
    """

    def __init__(self, channels: int, hidden: int = 64, stats: bool = True, context: bool = False):
        super().__init__()
        self.stats = stats
        self.context = context
        in_ch = 3 * channels if context else channels
        self.attn = nn.Sequential(nn.Conv1d(in_ch, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, 1, 1))
        self.out_dim = 2 * channels if stats else channels

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        a_in = h
        if self.context:
            mean, std = masked_mean_std(h, mask)
            t = h.shape[-1]
            a_in = torch.cat([h, mean[..., None].expand(-1, -1, t), std[..., None].expand(-1, -1, t)], dim=1)
        scores = self.attn(a_in)  # (B, 1, T)
        scores = scores.float().masked_fill(~mask[:, None, :], torch.finfo(torch.float32).min)
        w = torch.softmax(scores, dim=-1)
        h = h.float()
        mean = (w * h).sum(-1)
        if not self.stats:
            return mean
        var = (w * h * h).sum(-1) - mean * mean
        return torch.cat([mean, var.clamp_min(1e-5).sqrt()], dim=1)


Pool: TypeAlias = MeanPool | StatsPool | AttentivePool
"""A pooling layer from :func:`make_pool`: ``(B, C, T)`` with its mask → ``(B, out_dim)``."""


def make_pool(kind: str, channels: int) -> Pool:
    """``mean`` | ``stats`` (mean + std) | ``attention`` (attentive mean) | ``attentive_stats`` (ECAPA-style)."""
    if kind == "mean":
        return MeanPool(channels)
    if kind == "stats":
        return StatsPool(channels)
    if kind == "attention":
        return AttentivePool(channels, stats=False)
    if kind == "attentive_stats":
        return AttentivePool(channels, stats=True, context=True)
    raise ConfigError(f"pool must be mean, stats, attention or attentive_stats, got {kind!r}")


def make_head(in_dim: int, hidden: int, n_classes: int, dropout: float) -> nn.Sequential:
    """Small classifier: dropout → linear → ReLU → dropout → linear (``hidden`` 0: a single linear layer)."""
    if hidden <= 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, n_classes))
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
    )


class ConvBlock2d(nn.Module):
    """``n_convs`` × (Conv 3×3 → BatchNorm → ReLU → mask) → max-pool ``(freq_pool, time_pool)`` with ``ceil_mode``.

    Input ``(B, C_in, F, T)`` with valid lengths ``(B,)``; returns the pooled map and its lengths. ReLU output is
    ≥ 0 and padding is zeroed before pooling, so a pooling window that runs into padding gives the same value as
    one that runs off the end of an unpadded clip.
    """

    def __init__(self, c_in: int, c_out: int, freq_pool: int = 2, time_pool: int = 2, n_convs: int = 1):
        super().__init__()
        if n_convs < 1:
            raise ConfigError(f"convs per block must be at least 1, got {n_convs}")
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
            for i in range(n_convs)
        )
        self.act = nn.ReLU()
        self.time_pool = int(time_pool)
        self.pool = (
            nn.MaxPool2d((freq_pool, time_pool), ceil_mode=True) if freq_pool > 1 or time_pool > 1 else nn.Identity()
        )

    def forward(self, h: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        mask = length_mask(lengths, h.shape[-1])[:, None, None, :].to(h.dtype)
        for layer in self.layers:
            h = self.act(layer(h)) * mask
        h = self.pool(h)
        if self.time_pool > 1:
            lengths = pooled_lengths(lengths, self.time_pool)
        return h, lengths


def check_pools(channels: Sequence[int], pools: Sequence[int], what: str) -> None:
    """Raise ConfigError unless ``pools`` has one entry per conv block and ``channels`` are positive ints."""
    if len(channels) != len(pools):
        raise ConfigError(f"{what} needs one entry per conv block ({len(channels)}), got {len(pools)}")
    if not channels or any(int(c) < 1 for c in channels):
        raise ConfigError(f"channels must be a non-empty list of positive ints, got {list(channels)}")


def conv_out_size(size: int, pools: Sequence[int]) -> int:
    """Size of an axis after ``ceil_mode`` poolings by each of ``pools``."""
    for p in pools:
        size = math.ceil(size / int(p))
    return size
