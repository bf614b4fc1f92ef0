"""ONNX export of a trained torch model into a *model folder* that serving loads without PyTorch.

The folder layout and metadata are the contract in :mod:`ser.model_folder`. The feature front end (librosa log-mel /
MFCC) is not expressed in ONNX: the numpy code in :mod:`ser.features.frames` is shared verbatim by training and
serving, and the folder records its full configuration.

Every export is checked: onnxruntime and PyTorch must agree to ``atol`` (1e-4 by default) on the given inputs
(real clips' features where the caller has them), else :class:`~ser.errors.SerError` and nothing is written. The
folder is written to a temporary sibling and renamed into place, so a killed export leaves no half folder.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ser import TARGET_SR
from ser.errors import ConfigError, SerError
from ser.io import write_json
from ser.model_folder import (
    FORMAT,
    FORMAT_VERSION,
    INPUT_NAME,
    METADATA_FILE,
    MODEL_FILE,
    OUTPUT_NAME,
    check_trim,
    read_metadata,
)

OPSET = 17
PARITY_ATOL = 1e-4


def code_version() -> str:
    """``git describe`` of the source tree when it is a git checkout (``+dirty`` when modified), else the package
    version."""
    import ser

    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty=+dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return f"{ser.__version__}+git.{out}" if out else ser.__version__
    except (OSError, subprocess.SubprocessError):
        return ser.__version__


def export_onnx(model: Any, path: str | Path, *, opset: int = OPSET) -> Path:
    """Export a frame-input :class:`~ser.models.base.SerModel` to ONNX with dynamic batch and frame axes.

    Uses the TorchScript-based exporter (``dynamo=False``): it handles every recipe (the dynamo exporter fails on
    the packed LSTM/GRU of ``rnn`` / ``crnn``). Without constant folding (``do_constant_folding=False``), so each
    BatchNorm stays a BatchNormalization node with its own mean and variance (constant folding fuses a
    Conv → BatchNorm pair into one convolution, after which :mod:`ser.adabn` cannot re-estimate the statistics);
    onnxruntime folds the constants and fuses Conv + BatchNormalization itself when it loads the graph, so serving
    computes the same and as fast.
    """
    import torch

    from ser.models.base import SerModel

    if not isinstance(model, SerModel):
        raise ConfigError(f"ONNX export takes a torch SerModel, got {type(model).__name__}")
    if model.input_kind != "frames":
        raise ConfigError(f"ONNX export supports frame-input models; {model.name!r} takes {model.input_kind}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model = model.cpu().eval()
    example = torch.randn(1, model.n_features, 300)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch", 2: "frames"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                dynamo=False,
                do_constant_folding=False,  # keep BatchNormalization nodes (ser.adabn)
            )
    finally:
        model.train(was_training)
    return path


def parity(model: Any, onnx_path: str | Path, inputs: list[np.ndarray]) -> float:
    """Largest absolute logit difference between PyTorch and onnxruntime over ``inputs`` (each ``(F, T)``)."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    model.eval()
    with torch.inference_mode():
        for x in inputs:
            x = np.ascontiguousarray(x[None], dtype=np.float32)
            ref = model(torch.from_numpy(x)).numpy()
            got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
            worst = max(worst, float(np.abs(ref - got).max()))
    return worst


def write_model_folder(
    out_dir: str | Path,
    model: Any,
    *,
    labels: list[str],
    feature_config: Any,
    kind: str = "logmel",
    trim_db: float | None = 40.0,
    trim: str = "level",
    eval_mode: str = "full",
    window: int | None = None,
    hop: int | None = None,
    parity_inputs: list[np.ndarray] | None = None,
    atol: float = PARITY_ATOL,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Export ``model`` and its preprocessing into ``out_dir`` (``model.onnx`` + ``metadata.json``), atomically.

    ``feature_config``: the :class:`~ser.features.FeatureConfig` (or its dict) the model was trained on.
    ``trim``, ``trim_db``: how its input was trimmed (:data:`ser.model_folder.TRIM_MODES`).
    ``parity_inputs``: ``(F, T)`` arrays to check ONNX against PyTorch on (default: three random lengths).
    ``extra``: more metadata (``name``, ``version``, ``model``, ``training``, ``metrics``, ...).
    Returns ``out_dir``; an existing folder there is replaced.
    """
    if len(labels) != model.n_classes:
        raise ConfigError(f"{len(labels)} labels for a model with {model.n_classes} classes")
    fc = feature_config.to_dict() if hasattr(feature_config, "to_dict") else dict(feature_config)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        onnx_path = export_onnx(model, tmp / MODEL_FILE)
        rng = np.random.default_rng(0)
        checks = parity_inputs or [rng.normal(-40, 15, (model.n_features, t)).astype(np.float32) for t in (50, 300)]
        diff = parity(model, onnx_path, checks)
        if not diff <= atol:
            raise SerError(f"ONNX parity check failed: max |Δlogit| {diff:.2e} > {atol:.0e}")
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": "ser-emotion",
            "version": "unregistered",
            "labels": list(labels),
            "sample_rate": int(fc.get("sr", TARGET_SR)),
            "input": {
                "kind": kind,
                "shape": ["batch", model.n_features, "frames"],
                "feature_config": fc,
                "trim": check_trim(trim),
                "trim_db": trim_db,
                "min_frames": 8,
            },
            "eval": {"mode": eval_mode, "window": window, "hop": hop},
            "model": {"name": model.name, "params": model.hparams, "n_params": int(model.n_params())},
            "export": {"opset": OPSET, "parity_max_abs_diff": diff, "parity_inputs": len(checks), "atol": atol},
            "code_version": code_version(),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **(extra or {}),
        }
        write_json(tmp / METADATA_FILE, meta)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def update_metadata(model_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into a model folder's ``metadata.json`` (atomic rewrite); returns the new metadata."""
    meta = read_metadata(model_dir)
    meta.update(fields)
    write_json(Path(model_dir) / METADATA_FILE, meta)
    return meta
