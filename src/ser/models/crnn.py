"""Convolutional-recurrent model (``crnn``): conv blocks over the spectrogram, a bidirectional GRU, attention.

Input ``x`` ``(B, n_mels, T)`` (log-mel in dB, the layout ``ser.features.frames.logmel`` returns, batched) and
``lengths`` ``(B,)`` in frames.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ser.models.base import SerModel
from ser.models.layers import (
    ConvBlock2d,
    InputNorm,
    check_pools,
    conv_out_size,
    length_mask,
    make_head,
    make_pool,
)
from ser.models.rnn import make_rnn, run_packed


class CRNN(SerModel):
    """Conv front end that pools mostly frequency, then a BiGRU over time, attention pooling and a head.

    Default: 3 :class:`~ser.models.layers.ConvBlock2d` (16-32-32 channels, each halving frequency; the first halves
    time too, so the GRU runs at 20 ms), the (channels × remaining bands) map projected to ``proj`` per frame,
    a 1-layer BiGRU of ``hidden`` units per direction (``cell`` switches to LSTM), attention pooling.
    """

    name = "crnn"

    def __init__(
        self,
        n_classes: int,
        n_features: int = 64,
        *,
        channels: Sequence[int] = (16, 32, 32),
        time_pool: Sequence[int] = (2, 1, 1),
        freq_pool: int = 2,
        proj: int = 128,
        cell: str = "gru",
        hidden: int = 96,
        layers: int = 1,
        pool: str = "attention",
        head_hidden: int = 64,
        dropout: float = 0.2,
        input_norm: str = "batch",
    ):
        super().__init__(
            n_classes,
            n_features,
            dict(
                channels=list(channels),
                time_pool=list(time_pool),
                freq_pool=freq_pool,
                proj=proj,
                cell=cell,
                hidden=hidden,
                layers=layers,
                pool=pool,
                head_hidden=head_hidden,
                dropout=dropout,
                input_norm=input_norm,
            ),
        )
        check_pools(channels, time_pool, "time_pool")
        self.norm = InputNorm(n_features, input_norm)
        blocks, c_in = [], 1
        for c_out, tp in zip(channels, time_pool, strict=True):
            blocks.append(ConvBlock2d(c_in, int(c_out), freq_pool, int(tp)))
            c_in = int(c_out)
        self.blocks = nn.ModuleList(blocks)
        bands = conv_out_size(n_features, [freq_pool] * len(blocks))
        self.proj = nn.Sequential(nn.Linear(c_in * bands, proj), nn.ReLU())
        self.rnn = make_rnn(cell, proj, hidden, layers, dropout)
        self.pool = make_pool(pool, 2 * hidden)
        self.head = make_head(self.pool.out_dim, head_hidden, n_classes, dropout)

    def embed(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        lengths = self._check_input(x, lengths)
        h = self.norm(x, length_mask(lengths, x.shape[-1])).unsqueeze(1)  # (B, 1, F, T)
        for block in self.blocks:
            h, lengths = block(h, lengths)
        b, c, f, t = h.shape
        h = self.proj(h.reshape(b, c * f, t).transpose(1, 2))  # (B, T', proj)
        h = run_packed(self.rnn, h, lengths).transpose(1, 2)  # (B, 2H, T')
        return self.pool(h, length_mask(lengths, t))
