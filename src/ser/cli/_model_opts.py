"""The exported-model options shared by ``ser serve``, ``ser predict``, ``ser timeline`` and ``ser listen``: their
help texts and the model loading behind them (onnxruntime only, no PyTorch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ser.errors import ConfigError

MODEL_HELP = "an exported model folder (model.onnx + metadata.json)"
WORKDIR_HELP = (
    "workdir whose registry holds the model (default $SER_WORKDIR or ./runs; with neither and no champion there, "
    "the bundled pretrained model)"
)
REF_HELP = "registry reference NAME[@ALIAS|/VERSION] (default: the champion of ser-emotion)"


def model_dir_of(model: Path | None, workdir: Path | None, ref: str | None) -> Path:
    """The model folder named by ``--model``, or by ``--workdir`` / ``--ref`` in a registry; with none of them
    and no champion in the default workdir, the bundled pretrained model (:func:`ser.pretrained.fallback_dir`),
    announced in one line on stderr."""
    from ser.model_folder import check_model_dir
    from ser.pretrained import fallback_dir, notice
    from ser.registry import default_workdir, resolve

    if model is not None and (workdir is not None or ref is not None):
        raise ConfigError("give --model or --workdir/--ref, not both")
    if model is not None:
        return check_model_dir(model)
    bundled = fallback_dir(ref) if workdir is None else None
    if bundled is not None:
        typer.echo(notice(bundled), err=True)  # plain echo: one line, never wrapped at the terminal width
        return bundled
    return resolve(workdir or default_workdir(), ref)


def load_predictor(model: Path | None, workdir: Path | None, ref: str | None, threads: int | None) -> Any:
    """The :class:`ser.inference.Predictor` of the model the options name (``threads``: onnxruntime threads,
    default all cores)."""
    from ser.inference import Predictor, default_threads

    return Predictor(model_dir_of(model, workdir, ref), threads=threads or default_threads())
