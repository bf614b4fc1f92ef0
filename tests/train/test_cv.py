"""Cross-validation glue: trimming, late fusion, resumable fold files, and a small end-to-end protocol."""

from __future__ import annotations

import numpy as np
import pytest

from ser.errors import ConfigError, SerError
from ser.model_folder import trim_bounds
from ser.train.cv import FoldOutput, ensemble_folds, fuse, load_fold, save_fold
from tests.conftest import synth_run_dir


def test_trim_bounds_drops_quiet_edges():
    spec = np.full((4, 10), -100.0)
    spec[:, 3:7] = -20.0
    spec[0, 8] = -50.0  # within 40 dB of the loudest frame → kept
    assert trim_bounds(spec, 40.0) == (3, 9)
    assert trim_bounds(spec, 20.0) == (3, 7)
    assert trim_bounds(spec, None) == (0, 10)


def test_fuse_is_weighted_mean_and_normalised():
    a = np.array([[0.9, 0.1], [0.2, 0.8]])
    b = np.array([[0.5, 0.5], [0.6, 0.4]])
    np.testing.assert_allclose(fuse([a, b]), (a + b) / 2)
    np.testing.assert_allclose(fuse([a, b], [3, 1]), (3 * a + b) / 4)
    with pytest.raises(ConfigError):
        fuse([a, b], [1.0])
    with pytest.raises(ConfigError):
        fuse([a, b], [0.0, 0.0])


def _out(ids, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(3), size=len(ids))
    return FoldOutput(p, rng.integers(0, 3, len(ids)), list(ids), {"seconds": 1.5, "n_params": 10})


def test_fold_files_round_trip_and_corrupt_is_recomputed(tmp_path):
    out = _out(["a", "b", "c"])
    save_fold(tmp_path, "m", 0, out)
    back = load_fold(tmp_path, "m", 0)
    np.testing.assert_array_equal(back.proba, out.proba)
    assert back.utt_ids == ["a", "b", "c"] and back.info["n_params"] == 10
    assert load_fold(tmp_path, "m", 1) is None
    (tmp_path / "m" / "fold_0.npz").write_bytes(b"garbage")
    assert load_fold(tmp_path, "m", 0) is None


def test_ensemble_requires_same_utterances():
    a, b = [_out(["x", "y"], 0)], [_out(["x", "y"], 1)]
    fused = ensemble_folds([a, b])
    np.testing.assert_allclose(fused[0].proba, (a[0].proba + b[0].proba) / 2)
    assert fused[0].info["n_params"] == 20
    with pytest.raises(SerError, match="different test utterances"):
        ensemble_folds([a, [_out(["x", "z"], 1)]])


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    return synth_run_dir(tmp_path_factory.mktemp("synth"), n_speakers=6, per_emotion=4, k=3)


def test_ser_train_classical_and_tiny_cnn_on_synthetic(synth_run, run_cli, tmp_path):
    import json

    import yaml

    manifest, splits = synth_run / "m" / "manifest.parquet", synth_run / "s" / "splits.parquet"
    args = ("train", manifest, "--splits", splits, "--threads", "1", "--workers", "1", "--json")
    code, out, err = run_cli(*args, "--model", "classical", "--out", tmp_path / "run")
    assert code == 0, err
    res = json.loads(out)
    assert res["folds"] == 3 and res["uar_mean"] > 0.5  # chance is 0.125 for 8 classes
    assert (tmp_path / "run" / "classical" / "report" / "confusion_matrix.png").stat().st_size > 5000
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"params": {"channels": [8, 16, 16], "convs": [1, 1, 1], "time_pool": [2, 2, 1]},
             "train": {"epochs": 12, "crop_frames": 150, "lr": 5e-3}, "val_speakers": 1}
        )
    )  # fmt: skip
    code, out, err = run_cli(*args, "--model", "cnn", "--config", cfg, "--out", tmp_path / "run", "--folds", "0")
    assert code == 0, err
    assert json.loads(out)["uar_mean"] > 0.3
    fold = json.loads((tmp_path / "run" / "cnn" / "fold_0.json").read_text())
    assert fold["val_speakers"] and not set(fold["val_speakers"]) & set(fold["test_speakers"])
    # resume: the finished fold is read back, not retrained
    code, out2, _ = run_cli(*args, "--model", "cnn", "--config", cfg, "--out", tmp_path / "run", "--folds", "0")
    assert code == 0 and json.loads(out2)["uar_mean"] == json.loads(out)["uar_mean"]
    code, out3, _ = run_cli("evaluate", tmp_path / "run", "--manifest", manifest, "--model", "classical", "--json")
    assert code == 0 and json.loads(out3)["uar_mean"] == res["uar_mean"]
