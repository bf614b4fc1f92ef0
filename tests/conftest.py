"""Shared fixtures. Tests that need ../shared/data fail (not skip) under CI when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SER_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.is_dir():
        msg = f"real corpus missing: {path} (tests on real data need ../shared/data)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def ravdess_dir() -> Path:
    return _shared("ravdess")


@pytest.fixture(scope="session")
def emodb_dir() -> Path:
    return _shared("emodb")


@pytest.fixture(scope="session")
def cremad_dir() -> Path:
    return _shared("cremad")


@pytest.fixture
def run_cli(capsys):
    """Run ``ser`` in-process: ``code, out, err = run_cli("data", "ingest", ...)``."""
    from ser.cli import main

    def _run(*args: str) -> tuple[int, str, str]:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return _run


def tone(seconds: float = 1.0, sr: int = 16_000, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    """A harmonic test tone, float32 mono."""
    t = np.arange(int(seconds * sr)) / sr
    y = sum(amp / k * np.sin(2 * np.pi * freq * k * t) for k in range(1, 5))
    return y.astype(np.float32)


def write_wav(path: Path, y: np.ndarray, sr: int = 16_000, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, sr, subtype=subtype)
    return path


def synth_run_dir(root: Path, n_speakers: int, per_emotion: int, k: int) -> Path:
    """A synthetic corpus ingested to ``root/m/manifest.parquet`` with ``k`` speaker folds in
    ``root/s/splits.parquet`` (what ``ser train`` / ``ser tune`` take on the command line)."""
    from ser.data.ingest import ingest, write_outputs
    from ser.data.split import make_splits
    from ser.data.synth import synthesize
    from ser.io import write_parquet

    result = ingest("ravdess", synthesize(root / "corpus", n_speakers=n_speakers, per_emotion=per_emotion, seed=0))
    write_outputs(result, root / "m")
    write_parquet(root / "s" / "splits.parquet", make_splits(result.manifest, "kfold", k=k, seed=0))
    return root


RAVDESS8 = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


def export_tiny_model(path: Path, version: str = "1", labels: list[str] | None = None, **extra) -> Path:
    """A model folder (ONNX + metadata) of a small untrained CNN over 64-band log-mel: for serving tests, which check
    shapes, protocols and errors, not accuracy. ``extra`` is merged into metadata.json."""
    from ser.export import write_model_folder
    from ser.features import FeatureConfig
    from ser.models.factory import build_model

    m = build_model("cnn", 8, 64, channels=[8, 16], convs=[1, 1], time_pool=[2, 2], pool="attentive_stats", seed=0)
    return write_model_folder(
        path, m, labels=labels or RAVDESS8, feature_config=FeatureConfig(), extra={"version": version, **extra}
    )


@pytest.fixture(scope="module")
def holder(model_dir):
    """A loaded hot-reloadable model over the module's ``model_dir`` fixture."""
    from ser.serve.engine import ModelHolder

    h = ModelHolder(model_dir)
    assert h.reload().ok
    return h


@pytest.fixture
def make_client(holder):
    """``make_client(**settings)`` → a started TestClient over the module's loaded ``holder`` (closed afterwards)."""
    from fastapi.testclient import TestClient

    from ser.serve.app import Settings, create_app

    opened: list = []

    def _make(holder_=None, **kw):
        kw.setdefault("model_dir", holder.model_dir)
        c = TestClient(create_app(Settings(**kw), holder=holder_ or holder))
        c.__enter__()
        opened.append(c)
        return c

    yield _make
    for c in opened:
        c.__exit__(None, None, None)


@pytest.fixture
def one_torch_thread():
    """torch on one CPU thread for the test (restored after): small models run faster and reproducibly."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (2 CPUs) for this test session; yields its GCS address (``host:port``).

    ``ray.init`` in the test process starts the head (GCS, raylet, workers) and makes the test process its driver,
    so code under test that calls ``ray.init(address=...)`` must accept an already-initialised driver (check
    ``ray.is_initialized()`` first). Torch threads in workers are pinned by the code under test, not here."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def robustness(monkeypatch):
    """benchmarks/robustness.py as a module (dropped from ``sys.modules`` again afterwards)."""
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    yield importlib.import_module("robustness")
    sys.modules.pop("robustness", None)
