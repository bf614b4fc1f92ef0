"""Self-supervised speech backbone (``ssl``): wav2vec 2.0 / HuBERT / WavLM from a local folder, plus a small head.

Input ``x`` ``(B, N)`` raw waveform, 16 kHz mono float, and ``lengths`` ``(B,)`` in samples. The backbone is loaded
with ``transformers.AutoModel.from_pretrained(path, local_files_only=True)`` — nothing is downloaded; ``path`` is a
folder holding ``config.json`` and the weights (``save_pretrained`` output, or a hub snapshot copied by the user).
The hidden states of all layers (the CNN feature projection + every transformer layer) are mixed by a learned
softmax-weighted sum, projected per frame, pooled over valid frames (``mean`` / ``attention`` / ``stats``) and
classified by a small head. ``freeze=True`` (default) keeps the backbone fixed (no gradients, always in eval mode);
``freeze=False`` fine-tunes it (the convolutional feature encoder stays frozen unless
``freeze_feature_encoder=False``).

Padding: backbones whose feature encoder uses layer norm (``feat_extract_norm="layer"``: wav2vec2-large-lv60,
HuBERT-large, WavLM-large, ...) take an attention mask. Backbones with group norm (wav2vec2-base, HuBERT-base) are
documented by transformers to be run *without* padding, so a batch of unequal lengths is run one clip at a time —
exact, just slower (training crops give equal lengths, so training batches stay batched).

Needs the optional ``transformers`` package (imported only when the model is built).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ser.errors import ConfigError
from ser.models.base import SerModel
from ser.models.layers import length_mask, make_head, make_pool, masked_mean_std

if TYPE_CHECKING:  # transformers is optional and imported only when a backbone is loaded
    from transformers import PreTrainedModel


def load_backbone(path: str | Path | None) -> PreTrainedModel:
    """``AutoModel.from_pretrained(path, local_files_only=True)``, with a one-line ConfigError on any failure."""
    if path is None or str(path) == "":
        raise ConfigError("ssl: 'path' (a local folder with a transformers speech model) is required")
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"ssl: backbone folder not found: {path}")
    if not (path / "config.json").is_file():
        raise ConfigError(f"ssl: no config.json in {path} (expected a transformers save_pretrained folder)")
    try:
        import transformers
        from transformers import AutoModel
    except ImportError as exc:  # pragma: no cover - transformers is installed in the dev environment
        raise ConfigError("ssl: the optional 'transformers' package is not installed") from exc
    tlog = transformers.utils.logging
    bars, verbosity = tlog.is_progress_bar_enabled(), tlog.get_verbosity()
    tlog.disable_progress_bar()
    tlog.set_verbosity_error()
    try:
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"ssl: cannot load a transformers model from {path}: {reason}") from exc
    finally:
        tlog.set_verbosity(verbosity)
        if bars:
            tlog.enable_progress_bar()
    cfg = model.config
    if not hasattr(cfg, "conv_kernel") or not hasattr(cfg, "conv_stride") or not hasattr(cfg, "hidden_size"):
        raise ConfigError(f"ssl: {path} is a {type(model).__name__}, not a wav2vec2-style speech model")
    return model


class SSLClassifier(SerModel):
    """Frozen or fine-tuned SSL backbone + weighted layer sum + pooled head.

    Input ``x`` ``(B, N)`` waveform at 16 kHz, ``lengths`` ``(B,)`` in samples. ``n_features`` is ignored (1).
    """

    name = "ssl"
    input_kind = "waveform"
    backbone: PreTrainedModel

    def __init__(
        self,
        n_classes: int,
        n_features: int = 1,
        *,
        path: str | None = None,
        freeze: bool = True,
        freeze_feature_encoder: bool = True,
        normalize: bool = True,
        spec_augment: bool = False,
        proj: int = 128,
        pool: str = "attention",
        hidden: int = 64,
        dropout: float = 0.2,
    ):
        super().__init__(
            n_classes,
            1,
            dict(
                path=None if path is None else str(path),
                freeze=freeze,
                freeze_feature_encoder=freeze_feature_encoder,
                normalize=normalize,
                spec_augment=spec_augment,
                proj=proj,
                pool=pool,
                hidden=hidden,
                dropout=dropout,
            ),
        )
        self.backbone = load_backbone(path)
        cfg = self.backbone.config
        cfg.apply_spec_augment = bool(spec_augment)
        self.freeze = bool(freeze)
        self.normalize = bool(normalize)
        self.use_mask = getattr(cfg, "feat_extract_norm", "group") == "layer"
        self.kernels = [int(k) for k in cfg.conv_kernel]
        self.strides = [int(s) for s in cfg.conv_stride]
        self.min_samples = self._receptive_field()
        if self.freeze:
            self.backbone.requires_grad_(False)
        elif freeze_feature_encoder and hasattr(self.backbone, "feature_extractor"):
            self.backbone.feature_extractor.requires_grad_(False)
        n_states = int(cfg.num_hidden_layers) + 1
        self.layer_weights = nn.Parameter(torch.zeros(n_states))
        self.proj = nn.Sequential(nn.Linear(int(cfg.hidden_size), proj), nn.ReLU())
        self.pool = make_pool(pool, proj)
        self.head = make_head(self.pool.out_dim, hidden, n_classes, dropout)
        self.train()

    def _receptive_field(self) -> int:
        n = 1
        for k, s in zip(reversed(self.kernels), reversed(self.strides), strict=True):
            n = (n - 1) * s + k
        return n

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Backbone output frames for waveforms of ``lengths`` samples (the conv stack's arithmetic)."""
        for k, s in zip(self.kernels, self.strides, strict=True):
            lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
        return lengths.clamp_min(1)

    def train(self, mode: bool = True) -> SSLClassifier:
        super().train(mode)
        if self.freeze:
            self.backbone.eval()
        return self

    def _states(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Hidden states of every layer, stacked ``(L+1, B, T', H)``."""
        mask = length_mask(lengths, x.shape[1])
        if self.normalize:
            mean, std = masked_mean_std(x[:, None, :], mask)
            x = (x - mean) / std
        x = x * mask.to(x.dtype)
        if self.use_mask or bool((lengths == x.shape[1]).all()):
            attn = mask.long() if self.use_mask else None
            states = self.backbone(x, attention_mask=attn, output_hidden_states=True).hidden_states
            return torch.stack(states, dim=0)
        # group-norm backbone and unequal lengths: one clip at a time, padded back with zeros
        t_out = int(self.frame_lengths(torch.tensor([x.shape[1]]))[0])
        outs = []
        for b in range(x.shape[0]):
            n = int(lengths[b])
            st = torch.stack(self.backbone(x[b : b + 1, :n], output_hidden_states=True).hidden_states, dim=0)
            outs.append(F.pad(st, (0, 0, 0, t_out - st.shape[2])))
        return torch.cat(outs, dim=1)

    def embed(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if x.dim() == 3 and x.shape[1] == 1:
            x = x[:, 0]
        if x.dim() != 2:
            raise ConfigError(f"ssl: expected a waveform batch (B, N), got {tuple(x.shape)}")
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        lengths = lengths.to(device=x.device, dtype=torch.long).clamp(1, x.shape[1])
        if x.shape[1] < self.min_samples:  # shorter than one backbone frame: pad with silence
            x = F.pad(x, (0, self.min_samples - x.shape[1]))
        lengths = lengths.clamp_min(self.min_samples)
        if self.freeze:
            with torch.no_grad():
                states = self._states(x, lengths)
        else:
            states = self._states(x, lengths)
        w = torch.softmax(self.layer_weights, dim=0).to(states.dtype)
        h = (w[:, None, None, None] * states).sum(0)  # (B, T', H)
        frames = self.frame_lengths(lengths).clamp_max(h.shape[1])
        h = self.proj(h).transpose(1, 2)  # (B, proj, T')
        return self.pool(h, length_mask(frames, h.shape[-1]))
