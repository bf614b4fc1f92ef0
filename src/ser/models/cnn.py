"""Convolutional frame models (``cnn``, ``tdnn``) and the layers every torch model shares.

Input convention of every frame model in :mod:`ser.models`: ``x`` of shape ``(B, F, T)`` — ``F`` feature rows
(mel bands, or MFCC + deltas) by ``T`` frames of 10 ms, exactly the layout ``ser.features.frames`` returns with a
batch axis in front — and optional ``lengths`` of shape ``(B,)``: the number of valid frames of each clip
(``None`` = all ``T``). Frames at ``t >= lengths[b]`` are padding: they are zeroed after every layer and left out of
every pooling, so a padded batch gives the same logits (in ``eval()`` mode) as each clip on its own.
Output: logits ``(B, n_classes)``; ``embed`` returns the pooled utterance embedding before the head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from ser.errors import ConfigError

# ---------------------------------------------------------------------------------------------------------------
# shared pieces


class SerModel(nn.Module):
    """Base of the torch models: remembers its constructor arguments so it can be rebuilt from a checkpoint."""

    name: ClassVar[str] = ""
    input_kind: ClassVar[Literal["frames", "waveform"]] = "frames"
    """``frames``: ``(B, F, T)`` 10 ms frames; ``waveform``: ``(B, N)`` samples at 16 kHz."""

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


def make_pool(kind: str, channels: int) -> nn.Module:
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


def _check_pools(channels: Sequence[int], pools: Sequence[int], what: str) -> None:
    if len(channels) != len(pools):
        raise ConfigError(f"{what} needs one entry per conv block ({len(channels)}), got {len(pools)}")
    if not channels or any(int(c) < 1 for c in channels):
        raise ConfigError(f"channels must be a non-empty list of positive ints, got {list(channels)}")


# ---------------------------------------------------------------------------------------------------------------
# cnn


class CNN(SerModel):
    """2-D CNN over a log-mel spectrogram.

    Input ``x`` ``(B, n_mels, T)`` (``n_features`` = ``n_mels``), ``lengths`` ``(B,)`` in frames.
    A stack of :class:`ConvBlock2d` (default 4 blocks 16-32-64-64 channels; each halves frequency, the first three
    halve time: a 3 s clip leaves 38 frames), the mean over frequency, masked pooling over time (``stats``:
    mean + std by default, or ``attention``/``attentive_stats``) and a small dropout head.
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
        _check_pools(channels, time_pool, "time_pool")
        convs = [1] * len(channels) if convs is None else list(convs)
        _check_pools(channels, convs, "convs")
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


def conv_out_size(size: int, pools: Sequence[int]) -> int:
    """Size of an axis after ``ceil_mode`` poolings by each of ``pools``."""
    for p in pools:
        size = math.ceil(size / int(p))
    return size
