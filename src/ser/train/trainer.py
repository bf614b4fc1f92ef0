"""Training loop for the torch models: AdamW + schedule, class-weighted label-smoothed loss (with ``distil``, inside
a knowledge-distillation loss towards the training set's teacher logits, :mod:`ser.train.distil`), early stopping on
validation UAR, atomic per-epoch checkpoints with exact resume, CUDA mixed precision when available.

``fit(train_ds, val_ds, cfg, out_dir)`` trains ``cfg.model`` on :class:`~ser.train.data.ArrayDataset` s and returns
a :class:`TrainResult`; ``predict_proba(model, ds)`` (:mod:`ser.train.predict`) gives class probabilities
``(N, n_classes)``.

Files written to ``out_dir`` (all atomically):
``last.pt`` — full training state after every epoch (model, optimiser, scheduler, grad scaler, epoch, best metric,
best weights, history, early-stopping counter, every RNG state); ``best.pt`` — the best model so far
(:func:`ser.models.factory.save_model` format, loadable with ``load_model``); ``history.json`` — per-epoch metrics.
``fit(..., resume=True)`` continues from ``last.pt`` and ends with the same weights and history as an
uninterrupted run with the same config on the same machine (same device and thread count).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from ser.errors import ConfigError, SerError, validation_reason
from ser.io import write_json
from ser.models.base import SerModel
from ser.models.factory import build_model, model_spec, save_model
from ser.train.checkpoint import load_checkpoint, save_checkpoint, set_rng_states
from ser.train.data import ArrayDataset, training_batches
from ser.train.predict import check_compatible, evaluate, time_scale

"""Samples per 10 ms frame: crop and window lengths are given in frames and multiplied by this for waveforms."""
CHECKPOINT = "last.pt"
BEST_MODEL = "best.pt"
HISTORY = "history.json"


class DistilLoss(BaseModel):
    """The knowledge-distillation term of the training loss (:func:`ser.train.distil.distillation_loss`): its weight
    ``alpha`` against the hard-label loss and the softmax ``temperature`` (from a recipe's ``distil`` part)."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(ge=0, le=1)
    temperature: float = Field(gt=0)


class TrainConfig(BaseModel):
    """Everything that decides a training run. Lengths (``crop_frames``, ``eval_window``, ``eval_hop``) are in
    10 ms frames (300 = 3 s); for waveform models (``ssl``) they are converted to samples."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = "cnn"
    model_params: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup: float = Field(0.1, ge=0, lt=1)
    """Fraction of all steps spent warming up (one-cycle's rising phase; linear warm-up for cosine/constant)."""
    min_lr_ratio: float = Field(0.01, ge=0, le=1)
    """Cosine schedule floor as a fraction of ``lr``."""
    patience: int | None = Field(10, ge=1)
    """Stop after this many epochs without a validation-UAR gain above ``min_delta`` (None: never)."""
    min_delta: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    mixup: float = Field(0.0, ge=0)
    """Mixup of training batches: each batch is blended with a shuffled copy of itself by λ ~ Beta(α, α) and the
    loss is the same blend of the two targets' losses (α here; 0: off). Training data only."""
    class_weighting: bool = True
    """Weigh the loss by inverse class frequency of the training set."""
    grad_clip: float | None = Field(5.0, gt=0)
    crop_frames: int | None = Field(300, ge=1)
    """Training clips longer than this are randomly cropped each epoch (None: whole clips)."""
    eval_mode: Literal["full", "windows"] = "full"
    """Evaluation on whole clips, or the mean of logits over fixed windows."""
    eval_window: int | None = Field(None, ge=1)
    """Window for ``eval_mode=windows`` (default: ``crop_frames``, else 300)."""
    eval_hop: int | None = Field(None, ge=1)
    """Hop between windows (default: half a window)."""
    eval_batch_size: int = Field(64, ge=1)
    seed: int = 0
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    amp: bool = True
    """Mixed precision (float16 autocast + GradScaler) on CUDA; ignored on CPU."""
    num_threads: int | None = Field(None, ge=1)
    """torch CPU threads during training (None: leave as is)."""
    deterministic: bool = True
    """``torch.use_deterministic_algorithms`` (warn-only) and no cuDNN autotuning during training."""
    distil: DistilLoss | None = None
    """Train towards the training set's teacher logits (``ArrayDataset.teacher_logits``) as well as the labels:
    ``alpha * T^2 * KL + (1 - alpha) * hard-label loss``. None: the hard-label loss alone (and no teacher logits)."""

    @model_validator(mode="after")
    def _distil_without_mixup(self) -> TrainConfig:
        if self.distil is not None and self.mixup > 0:  # a mixed clip would need a mixed target: not wired
            raise ValueError("distil: distillation with mixup is not supported")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Validate ``data``; a problem raises ConfigError naming the field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"train config: {validation_reason(exc)}") from None

    def window_frames(self) -> int:
        return self.eval_window or self.crop_frames or 300


@dataclass
class TrainResult:
    """Outcome of :func:`fit`. ``model`` holds the best weights (eval mode, on the training device)."""

    model: SerModel
    best_state: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    """Per epoch: epoch, lr, train_loss, train_acc, val_loss, val_uar, val_acc (val_* None without validation)."""
    best_epoch: int
    best_val_uar: float | None
    epochs_run: int
    stopped_early: bool
    seconds: float
    epoch_seconds: list[float]
    device: str
    config: TrainConfig
    class_weights: list[float] | None = None
    out_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    resumed_epochs: int = 0
    """Epochs restored from a checkpoint (``resume=True``): trained by an earlier, killed run."""

    @property
    def seconds_before_resume(self) -> float:
        """Training time of the restored epochs, which a wall clock around this call does not see."""
        return float(sum(self.epoch_seconds[: self.resumed_epochs]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no tensors)."""
        return {
            "model": model_spec(self.model),
            "n_params": self.model.n_params(),
            "config": self.config.model_dump(mode="json"),
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_val_uar": self.best_val_uar,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "seconds": self.seconds,
            "epoch_seconds": self.epoch_seconds,
            "device": self.device,
            "class_weights": self.class_weights,
        }


# ---------------------------------------------------------------------------------------------------------------
# small pure pieces


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights ``N / (K · n_c)`` over the ``K`` classes present (a balanced set gives all ones);
    classes without examples get 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes, dtype=np.float64)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w


def mixup_batch(
    x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al., 2018) of a padded batch: ``λ x + (1 - λ) x[perm]`` with ``λ ~ Beta(α, α)``.

    Returns ``(x_mixed, lengths, y[perm], λ)``; a mixed clip is valid as far as the longer of its two parts.
    Randomness comes from ``rng`` (the trainer's data generator, so resume stays exact)."""
    lam = float(rng.beta(alpha, alpha))
    perm = torch.as_tensor(rng.permutation(len(y)), device=x.device)
    return lam * x + (1.0 - lam) * x[perm], torch.maximum(lengths, lengths[perm]), y[perm], lam


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` → CUDA when available else CPU; an unavailable CUDA device is a ConfigError."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {spec!r} (use auto, cpu, cuda or cuda:N)")
    return device


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """Per-step LR schedule: ``onecycle`` (torch OneCycleLR, peak ``lr`` after ``warmup`` of the steps; runs of
    fewer than 4 steps, too short for its two phases, get a constant ``lr``), ``cosine`` (linear warm-up then
    cosine to ``min_lr_ratio``·lr) or ``constant`` (after the warm-up)."""
    total_steps = max(1, total_steps)
    if cfg.schedule == "onecycle" and total_steps < 4:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    if cfg.schedule == "onecycle":
        pct = min(max(cfg.warmup, 2.0 / total_steps), 1.0 - 2.0 / total_steps)
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total_steps, pct_start=pct
        )
    warm = round(cfg.warmup * total_steps)
    floor = cfg.min_lr_ratio
    cosine = cfg.schedule == "cosine"

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if not cosine:
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices / kernels, none on biases, norms and scalars."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------------------------
# training


def fit(
    train_ds: ArrayDataset,
    val_ds: ArrayDataset | None,
    cfg: TrainConfig | dict[str, Any],
    out_dir: str | Path | None = None,
    *,
    progress: bool = False,
    resume: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on ``train_ds``, pick the epoch with the best validation UAR.

    ``val_ds`` None: no early stopping, the last epoch is kept. ``out_dir`` None: nothing written (no resume).
    ``resume``: continue from ``out_dir/last.pt`` when it exists (it must come from the same config, except
    ``device`` / ``num_threads``). ``progress``: one line per epoch on stderr. ``on_epoch(record)`` is called after
    each epoch's checkpoint is written (e.g. for pruning; an exception stops the run, resumable).
    """
    if not isinstance(cfg, TrainConfig):
        cfg = TrainConfig.from_dict(cfg)
    if val_ds is not None and val_ds.n_classes != train_ds.n_classes:
        raise SerError(f"train has {train_ds.n_classes} classes, validation {val_ds.n_classes}")
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ConfigError("resume needs an output folder")
    device = resolve_device(cfg.device)
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    try:
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        if cfg.deterministic:
            if device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        return _fit(train_ds, val_ds, cfg, out, device, progress, resume, on_epoch)
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench


def _fit(
    train_ds: ArrayDataset,
    val_ds: ArrayDataset | None,
    cfg: TrainConfig,
    out: Path | None,
    device: torch.device,
    progress: bool,
    resume: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
) -> TrainResult:
    run = _setup(train_ds, val_ds, cfg, out, device)
    st = _new_state()
    if resume and run.ckpt_path is not None and run.ckpt_path.is_file():
        _resume(run, run.ckpt_path, st)
    resumed = st["epoch"]
    console = _console() if progress else None
    epoch = st["epoch"]
    while not st["done"] and epoch < cfg.epochs:
        epoch += 1
        t0 = time.perf_counter()
        record = _train_epoch(run, train_ds, epoch)
        improved = _validate(run, val_ds, record, st)
        _end_epoch(run, st, record, improved, t0)
        if out is not None:
            _save_epoch(run, out, st, improved)
        if console is not None:
            _print_epoch(console, cfg, record, st)
        if on_epoch is not None:
            on_epoch(dict(record))
    return _result(run, st, resumed)


@dataclass
class _Run:
    """What a training run carries from one step to the next (built by :func:`_setup`)."""

    cfg: TrainConfig
    device: torch.device
    out: Path | None
    model: SerModel
    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    weights: np.ndarray | None
    criterion: nn.Module
    data_rng: np.random.Generator
    crop: int | None
    use_amp: bool
    eval_kw: dict[str, Any]
    teacher: torch.Tensor | None = None
    """Teacher logits of the training clips ``(N, n_classes)`` when distilling (:func:`_loss`)."""

    @property
    def ckpt_path(self) -> Path | None:
        return self.out / CHECKPOINT if self.out is not None else None


def _setup(
    train_ds: ArrayDataset, val_ds: ArrayDataset | None, cfg: TrainConfig, out: Path | None, device: torch.device
) -> _Run:
    """Seed, build the model, optimiser, schedule, loss and data generator of a run (in this order: it fixes what
    the seed gives each of them)."""
    seed_everything(cfg.seed)
    model = build_model(cfg.model, train_ds.n_classes, train_ds.n_features, seed=cfg.seed, **cfg.model_params)
    if not isinstance(model, SerModel):
        raise ConfigError(f"model {cfg.model!r} is not a torch model; fit it with its own fit()")
    check_compatible(model, train_ds)
    if val_ds is not None:
        check_compatible(model, val_ds)
    teacher = _teacher_logits(train_ds, val_ds, cfg, device)
    model.to(device)

    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)
    sched = make_scheduler(opt, cfg, cfg.epochs * steps_per_epoch)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    weights = class_weights(train_ds.labels, train_ds.n_classes) if cfg.class_weighting else None
    criterion = nn.CrossEntropyLoss(
        weight=None if weights is None else torch.tensor(weights, dtype=torch.float32, device=device),
        label_smoothing=cfg.label_smoothing,
    )
    data_rng = np.random.default_rng(cfg.seed)
    scale = time_scale(model)
    crop = cfg.crop_frames * scale if cfg.crop_frames else None
    eval_kw: dict[str, Any] = dict(
        batch_size=cfg.eval_batch_size,
        eval_mode=cfg.eval_mode,
        window=cfg.window_frames(),
        hop=cfg.eval_hop,
        device=device,
        amp=use_amp,
    )
    return _Run(
        cfg, device, out, model, opt, sched, scaler, weights, criterion, data_rng, crop, use_amp, eval_kw, teacher
    )


def _teacher_logits(
    train_ds: ArrayDataset, val_ds: ArrayDataset | None, cfg: TrainConfig, device: torch.device
) -> torch.Tensor | None:
    """The training clips' teacher logits ``(N, n_classes)`` on ``device`` for a distilling ``cfg``, else None.
    A teacher without ``cfg.distil`` (or the reverse), or teacher outputs on validation data, is refused."""
    if val_ds is not None and val_ds.teacher_logits is not None:
        raise SerError("validation data must not carry teacher outputs")
    if cfg.distil is None and train_ds.teacher_logits is not None:
        raise ConfigError("the training data carries teacher logits but the config has no distil settings")
    if cfg.distil is None:
        return None
    if train_ds.teacher_logits is None:
        raise ConfigError("distil: the training data carries no teacher logits")
    return torch.as_tensor(train_ds.teacher_logits, dtype=torch.float32, device=device)


def _new_state() -> dict[str, Any]:
    """The training state saved in every checkpoint (besides model, optimiser, schedule, scaler and RNGs)."""
    return dict(
        epoch=0,
        history=[],
        epoch_seconds=[],
        best_metric=None,
        best_epoch=0,
        best_state=None,
        bad_epochs=0,
        stopped_early=False,
        done=False,
    )


def _resume(run: _Run, ckpt_path: Path, st: dict[str, Any]) -> None:
    """Load ``last.pt`` (``ckpt_path``) into the run and ``st``: weights, optimiser, schedule, scaler, every RNG,
    the state."""
    ck = load_checkpoint(ckpt_path, run.cfg, run.device)
    run.model.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["optimizer"])
    run.sched.load_state_dict(ck["scheduler"])
    if ck["scaler"]:  # empty when written without mixed precision
        run.scaler.load_state_dict(ck["scaler"])
    set_rng_states(ck["rng"], run.data_rng)
    for k in st:
        st[k] = ck[k]


def _train_epoch(run: _Run, train_ds: ArrayDataset, epoch: int) -> dict[str, Any]:
    """One pass over shuffled training crops (mixup when configured); returns the epoch's record, its
    ``val_*`` fields still None."""
    cfg, model, device, opt, scaler = run.cfg, run.model, run.device, run.opt, run.scaler
    params = [p for g in opt.param_groups for p in g["params"]]
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    batches = training_batches(train_ds, cfg.batch_size, run.data_rng, run.crop, augment=True, indices=True)
    for x, lengths, y, idx in batches:
        x, lengths, y = x.to(device), lengths.to(device), y.to(device)
        y2, lam = y, 1.0
        if cfg.mixup > 0 and len(y) > 1:
            x, lengths, y2, lam = mixup_batch(x, lengths, y, cfg.mixup, run.data_rng)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=run.use_amp):
            logits = model(x, lengths)
        loss = _loss(run, logits.float(), y, idx)
        if lam != 1.0:  # never when distilling (TrainConfig refuses distil with mixup)
            loss = lam * loss + (1.0 - lam) * run.criterion(logits.float(), y2)
        if not torch.isfinite(loss):
            raise SerError(f"training diverged at epoch {epoch} (loss is {loss.item()}); try a lower lr")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        run.sched.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    return {
        "epoch": epoch,
        "lr": float(run.sched.get_last_lr()[0]),
        "train_loss": loss_sum / seen,
        "train_acc": correct / seen,
        "val_loss": None,
        "val_uar": None,
        "val_acc": None,
    }


def _loss(run: _Run, logits: torch.Tensor, y: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """The batch's training loss: the hard-label criterion, or with a teacher the distillation loss around it
    (``idx``: the batch's clip indices into the training set, where the teacher logits are looked up)."""
    if run.teacher is None or run.cfg.distil is None:
        return run.criterion(logits, y)
    from ser.train.distil import distillation_loss

    teacher = run.teacher[torch.as_tensor(idx, device=run.teacher.device)]
    d = run.cfg.distil
    return distillation_loss(logits, teacher, y, alpha=d.alpha, temperature=d.temperature, hard_loss=run.criterion)


def _validate(run: _Run, val_ds: ArrayDataset | None, record: dict[str, Any], st: dict[str, Any]) -> bool:
    """Fill ``record``'s ``val_*`` fields; True when the epoch beats the best by more than ``min_delta`` (every
    epoch counts as best without validation data)."""
    if val_ds is None:
        return True
    m = evaluate(run.model, val_ds, **run.eval_kw)
    record.update(val_loss=m["loss"], val_uar=m["uar"], val_acc=m["accuracy"])
    return st["best_metric"] is None or m["uar"] > st["best_metric"] + run.cfg.min_delta


def _end_epoch(run: _Run, st: dict[str, Any], record: dict[str, Any], improved: bool, t0: float) -> None:
    """Book the epoch into ``st``: best weights (CPU copy), early-stopping counter, history, timing, stop flags."""
    epoch = record["epoch"]
    if improved:
        st["best_metric"] = record["val_uar"]
        st["best_epoch"] = epoch
        st["best_state"] = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
        st["bad_epochs"] = 0
    else:
        st["bad_epochs"] += 1
    st["history"].append(record)
    st["epoch_seconds"].append(time.perf_counter() - t0)
    st["epoch"] = epoch
    st["stopped_early"] = run.cfg.patience is not None and st["bad_epochs"] >= run.cfg.patience
    st["done"] = st["stopped_early"] or epoch >= run.cfg.epochs


def _save_epoch(run: _Run, out: Path, st: dict[str, Any], improved: bool) -> None:
    """Write ``last.pt`` (everything to resume), ``best.pt`` when the epoch improved, and ``history.json`` into
    the run's folder ``out``."""
    save_checkpoint(out / CHECKPOINT, run.cfg, run.model, run.opt, run.sched, run.scaler, run.data_rng, st)
    if improved:
        save_model(out / BEST_MODEL, run.model, extra=_best_extra(run.cfg, st))
    write_json(out / HISTORY, {"history": st["history"], "best_epoch": st["best_epoch"]})


def _result(run: _Run, st: dict[str, Any], resumed: int) -> TrainResult:
    """The model with its best weights, in eval mode, and the run's facts."""
    if st["best_state"] is None:  # pragma: no cover - epochs >= 1 always records a best state
        raise SerError("training produced no model")
    run.model.load_state_dict(st["best_state"])
    run.model.eval()
    return TrainResult(
        model=run.model,
        best_state=st["best_state"],
        history=st["history"],
        best_epoch=st["best_epoch"],
        best_val_uar=st["best_metric"],
        epochs_run=st["epoch"],
        stopped_early=st["stopped_early"],
        seconds=float(sum(st["epoch_seconds"])),
        epoch_seconds=st["epoch_seconds"],
        device=str(run.device),
        config=run.cfg,
        class_weights=None if run.weights is None else [float(w) for w in run.weights],
        resumed_epochs=resumed,
        out_dir=run.out,
    )


def _best_extra(cfg: TrainConfig, st: dict[str, Any]) -> dict[str, Any]:
    return {"epoch": st["best_epoch"], "val_uar": st["best_metric"], "config": cfg.model_dump(mode="json")}


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _print_epoch(console: Any, cfg: TrainConfig, rec: dict[str, Any], st: dict[str, Any]) -> None:
    line = f"epoch {rec['epoch']:>3}/{cfg.epochs}  loss {rec['train_loss']:.4f}  acc {rec['train_acc']:.3f}"
    if rec["val_uar"] is not None:
        line += f"  val UAR {rec['val_uar']:.3f}  acc {rec['val_acc']:.3f}"
        line += f"  (best {st['best_metric']:.3f} @ {st['best_epoch']})"
    line += f"  lr {rec['lr']:.2e}  {st['epoch_seconds'][-1]:.1f}s"
    if st["stopped_early"]:
        line += f"  early stop: no gain for {cfg.patience} epochs"
    console.print(line, markup=False, soft_wrap=True)
