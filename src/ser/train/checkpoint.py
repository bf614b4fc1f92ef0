"""Training checkpoints: the full state of a run in one file (``last.pt``, written atomically after every epoch)
so that :func:`ser.train.trainer.fit` with ``resume=True`` ends exactly where an uninterrupted run would.

A checkpoint holds the config, the model spec and weights, optimiser, scheduler and grad-scaler states, every RNG
state (torch CPU / CUDA, python, numpy, the trainer's data generator) and the trainer's state (epoch, history,
best metric and weights, early-stopping counter).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ser.errors import ConfigError, SerError
from ser.io import atomic_path
from ser.models.factory import model_spec

if TYPE_CHECKING:
    from ser.train.trainer import TrainConfig

CHECKPOINT_FORMAT = "ser-train/1"
_RESUME_IGNORES = ("device", "num_threads")
"""Config fields a run may change when it resumes: where it runs, not what it computes."""


def rng_states(data_rng: np.random.Generator) -> dict[str, Any]:
    """Every RNG state a run depends on: torch (CPU, CUDA), python, numpy's global and the trainer's data RNG."""
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {**np_state, "state": {"key": np_state["state"]["key"].tolist(), "pos": np_state["state"]["pos"]}},
        "data": data_rng.bit_generator.state,
    }


def set_rng_states(states: dict[str, Any], data_rng: np.random.Generator) -> None:
    """Restore what :func:`rng_states` saved."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    random.setstate(_as_tuple(states["python"]))
    np_state = dict(states["numpy"])
    np_state["state"] = {
        "key": np.asarray(np_state["state"]["key"], dtype=np.uint32),
        "pos": int(np_state["state"]["pos"]),
    }
    np.random.set_state(np_state)
    data_rng.bit_generator.state = states["data"]


def _as_tuple(obj: Any) -> Any:
    return tuple(_as_tuple(o) for o in obj) if isinstance(obj, list | tuple) else obj


def save_checkpoint(path, cfg, model, opt, sched, scaler, data_rng, st: dict[str, Any]) -> None:
    """Write the full training state to ``path`` atomically (``st``: the trainer's epoch / best / history state)."""
    blob = {
        "format": CHECKPOINT_FORMAT,
        "config": cfg.model_dump(mode="json"),
        "spec": model_spec(model),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_states(data_rng),
        **st,
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def changed_fields(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """The fields in which a checkpoint's saved config differs from ``cfg``, besides where it runs (``device``,
    ``num_threads``)."""
    old, new = dict(saved), cfg.model_dump(mode="json")
    for k in _RESUME_IGNORES:
        old.pop(k, None)
        new.pop(k, None)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def same_config(saved: dict[str, Any], cfg: TrainConfig) -> bool:
    """Whether a checkpoint written with the config ``saved`` may be resumed under ``cfg``."""
    return not changed_fields(saved, cfg)


def load_checkpoint(path: Path, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with the same config (except ``device`` /
    ``num_threads``); tensors of the RNG states and the best weights come back on the CPU."""
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise SerError(f"cannot read checkpoint {path} ({type(exc).__name__}); delete it to start afresh") from exc
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise SerError(f"not a ser training checkpoint: {path}")
    changed = changed_fields(ck["config"], cfg)
    if changed:
        raise ConfigError(
            f"checkpoint {path} was written with a different config ({', '.join(changed)} differ); "
            "resume with the same config or use a new output folder"
        )
    ck["rng"]["torch"] = ck["rng"]["torch"].cpu()
    ck["rng"]["cuda"] = [s.cpu() for s in ck["rng"]["cuda"]]
    if ck["best_state"] is not None:
        ck["best_state"] = {k: v.cpu() for k, v in ck["best_state"].items()}
    return ck
