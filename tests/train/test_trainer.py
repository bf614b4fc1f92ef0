"""Trainer and datasets: crops/collate, class weights, early stopping, exact resume, determinism, a learnable toy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ser.errors import ConfigError, SerError
from ser.evaluate.metrics import uar_score as uar
from ser.models import load_model
from ser.train import (
    ArrayDataset,
    TrainConfig,
    class_weights,
    fit,
    fixed_windows,
    pad_collate,
    predict_proba,
    random_crop,
)
from ser.train.data import eval_batches, training_batches

TINY_CNN = dict(channels=[8, 16], time_pool=[2, 2], hidden=16, dropout=0.2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy(n: int, seed: int, n_feat: int = 12, lo: int = 50, hi: int = 120) -> ArrayDataset:
    """A (F, T) "spectrogram" whose middle bands carry a sinusoid over time; its frequency gives the class."""
    rng = np.random.default_rng(seed)
    arrays, labels = [], []
    for i in range(n):
        k = i % 4
        t = np.arange(int(rng.integers(lo, hi)))
        x = rng.normal(0.0, 1.0, (n_feat, t.size))
        x[3:8] += 2.0 * np.sin(2 * np.pi * (0.04 + 0.05 * k) * t + rng.uniform(0, 2 * np.pi))
        arrays.append(x.astype(np.float32))
        labels.append(k)
    return ArrayDataset(arrays, labels, n_classes=4)


def cfg(**kw) -> TrainConfig:
    base = dict(
        model="cnn",
        model_params=TINY_CNN,
        epochs=4,
        batch_size=8,
        lr=5e-3,
        crop_frames=40,
        seed=0,
        num_threads=1,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


def records(result):
    """The per-epoch history (timings are kept apart, in ``epoch_seconds``, so runs compare exactly)."""
    return [dict(h) for h in result.history]


# ---------------------------------------------------------------------------------------------------------------
# data


def test_dataset_layouts_and_checks():
    a = np.arange(12, dtype=np.float32).reshape(4, 3)  # (T=4, F=3)
    ds = ArrayDataset([a, a[:2]], [0, 1], layout="TF", ids=["x", "y"])
    assert ds.n_features == 3 and ds.n_classes == 2
    np.testing.assert_array_equal(ds[0][0], a.T)
    assert ds.lengths.tolist() == [4, 2]
    assert ds.class_counts().tolist() == [1, 1]
    assert len(ds.subset([1])) == 1
    with pytest.raises(SerError, match="feature rows"):
        ArrayDataset([np.zeros((3, 5)), np.zeros((4, 5))], [0, 1])
    with pytest.raises(SerError, match="NaN"):
        ArrayDataset([np.full((3, 5), np.nan), np.zeros((3, 5))], [0, 1], ids=["bad", "ok"])
    with pytest.raises(SerError, match=r"labels must lie in \[0, 2\)"):
        ArrayDataset([np.zeros((3, 5))] * 2, [0, 2], n_classes=2)
    with pytest.raises(SerError, match="mixes"):
        ArrayDataset([np.zeros(5), np.zeros((3, 5))], [0, 1])
    assert ArrayDataset([np.zeros(5), np.zeros(8)], [0, 1]).is_waveform


def test_crop_windows_and_collate():
    rng = np.random.default_rng(0)
    a = np.arange(100, dtype=np.float32)[None].repeat(2, 0)
    c = random_crop(a, 30, rng)
    assert c.shape == (2, 30) and c[0, -1] - c[0, 0] == 29
    assert random_crop(a[:, :20], 30, rng).shape == (2, 20)
    wins = fixed_windows(a, 40, 25)
    assert [int(w[0, 0]) for w in wins] == [0, 25, 50, 60]  # the last window ends on the clip's end
    assert all(w.shape == (2, 40) for w in wins)
    assert len(fixed_windows(a[:, :10], 40, 20)) == 1
    x, lengths, y = pad_collate([a[:, :5], a[:, :3]], [1, 0])
    assert x.shape == (2, 2, 5) and lengths.tolist() == [5, 3] and y.tolist() == [1, 0]
    assert torch.all(x[1, :, 3:] == 0)


def test_transform_runs_on_training_batches_only():
    calls = []

    def transform(arr, rng):
        calls.append(arr.shape)
        return arr[:, :-1] * 2

    ds = toy(6, 0)
    ds.transform = transform
    batches = list(training_batches(ds, 4, np.random.default_rng(0), crop=30))
    assert len(calls) == 6 and all(s == (12, 30) for s in calls)
    assert sum(len(b[2]) for b in batches) == 6
    assert all(int(b[1].max()) == 29 for b in batches)
    list(eval_batches(ds, 4))
    assert len(calls) == 6


# ---------------------------------------------------------------------------------------------------------------
# trainer pieces


def test_class_weights_inverse_frequency():
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(w, [4 / (2 * 3), 4 / (2 * 1), 0.0])
    np.testing.assert_allclose(class_weights(np.array([0, 1, 2, 0, 1, 2]), 3), [1, 1, 1])
    # weighted counts are equal across present classes
    labels = np.array([0] * 10 + [1] * 5 + [2] * 1)
    w = class_weights(labels, 3)
    np.testing.assert_allclose(w * np.bincount(labels), [16 / 3] * 3)


def test_uar_is_balanced_accuracy():
    y = np.array([0, 0, 0, 0, 1])
    assert uar(y, np.zeros(5, dtype=int)) == 0.5
    assert uar(y, y) == 1.0


def test_config_validation():
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig.from_dict({"epochs": 0})
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="not a torch model"):
        fit(toy(8, 0), None, cfg(model="classical", model_params={}))
    with pytest.raises(SerError, match="feature rows"):
        fit(toy(8, 0), toy(8, 1, n_feat=10), cfg(epochs=1))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            fit(toy(8, 0), None, cfg(device="cuda"))


# ---------------------------------------------------------------------------------------------------------------
# training runs


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    # min_delta 1.0 makes every epoch after the first a non-improvement
    result = fit(toy(16, 0), toy(8, 1), cfg(epochs=20, patience=2, min_delta=1.0), tmp_path)
    assert result.stopped_early and result.epochs_run == 3 and len(result.history) == 3
    assert result.best_epoch == 1
    state = result.model.state_dict()
    assert all(torch.equal(state[k], result.best_state[k]) for k in state)
    _, extra = load_model(tmp_path / "best.pt")
    assert extra["epoch"] == 1
    assert json.loads((tmp_path / "history.json").read_text())["best_epoch"] == 1
    assert result.class_weights == [1.0, 1.0, 1.0, 1.0]


def test_runs_are_deterministic():
    train, val = toy(24, 0), toy(8, 1)
    a = fit(train, val, cfg(epochs=3))
    b = fit(train, val, cfg(epochs=3))
    c = fit(train, val, cfg(epochs=3, seed=1))
    assert records(a) == records(b)
    assert all(torch.equal(a.best_state[k], b.best_state[k]) for k in a.best_state)
    assert records(a) != records(c)


class Crash(Exception):
    pass


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    train, val = toy(24, 0), toy(8, 1)

    def jitter(arr, rng):  # augmentation drawing from the trainer's RNG
        return arr + rng.normal(0.0, 0.1, arr.shape).astype(np.float32)

    train.transform = jitter
    config = cfg(epochs=5, patience=None, schedule="cosine", warmup=0.2)
    full = fit(train, val, config, tmp_path / "full")

    def crash_after_two(record):
        if record["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        fit(train, val, config, tmp_path / "cut", on_epoch=crash_after_two)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 2
    resumed = fit(train, val, config, tmp_path / "cut", resume=True)

    assert records(resumed) == records(full)
    assert resumed.best_epoch == full.best_epoch and resumed.epochs_run == 5
    assert full.resumed_epochs == 0 and full.seconds_before_resume == 0.0
    assert resumed.resumed_epochs == 2 and resumed.seconds_before_resume == sum(resumed.epoch_seconds[:2]) > 0
    last_full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    last_cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(last_full[k], last_cut[k]) for k in last_full)
    assert all(torch.equal(full.best_state[k], resumed.best_state[k]) for k in full.best_state)

    again = fit(train, val, config, tmp_path / "cut", resume=True)  # finished: nothing left to train
    assert records(again) == records(full)
    changed = config.model_copy(update={"lr": 1e-3})
    with pytest.raises(ConfigError, match="lr differ"):
        fit(train, val, changed, tmp_path / "cut", resume=True)


def test_learns_a_toy_task(tmp_path, capsys):
    train, val = toy(96, 0), toy(40, 1)
    result = fit(train, val, cfg(epochs=12, patience=6), tmp_path, progress=True)
    assert result.best_val_uar >= 0.85  # chance is 0.25
    assert "val UAR" in capsys.readouterr().err
    proba = predict_proba(result.model, val)
    assert proba.shape == (40, 4)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert uar(val.labels, proba.argmax(1)) == pytest.approx(result.best_val_uar)
    windowed = predict_proba(result.model, val, eval_mode="windows", window=40, hop=20)
    assert uar(val.labels, windowed.argmax(1)) >= 0.7
    short = val.subset([i for i in range(len(val)) if val.lengths[i] <= 60])
    np.testing.assert_allclose(
        predict_proba(result.model, short, eval_mode="windows", window=60),
        predict_proba(result.model, short),
        rtol=1e-5,
        atol=1e-6,
    )
