"""ONNX export: onnxruntime agrees with PyTorch to 1e-4 on real clips for every frame model and the shipped
variants (per-utterance input norm, the pooled RNN, a seed ensemble, an ensemble over log-mel + MFCC); the exported
folder predicts through ser.inference with the training preprocessing; a failed parity check writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ser.errors import ConfigError, SerError
from ser.export import parity, write_model_folder
from ser.features import FeatureConfig
from ser.inference import Predictor, softmax
from ser.model_folder import Preprocessing, read_metadata, window_starts
from ser.models.factory import build_model
from tests.conftest import RAVDESS8

SMALL = {
    "cnn": ("logmel", {"channels": [8, 16, 16], "convs": [1, 2, 1], "time_pool": [2, 2, 1], "pool": "attentive_stats"}),
    "tdnn": ("logmel", {"channels": 32, "agg_channels": 64, "hidden": 32}),
    "rnn": ("mfcc", {"hidden": 32, "layers": 2, "head_hidden": 32}),
    "crnn": ("logmel", {"channels": [8, 16, 16], "proj": 32, "hidden": 32, "head_hidden": 32}),
}
UTT = {"input_norm": "utterance"}
# id: (registry name, feature kind, constructor parameters): the small models plus the shipped recipes' variants
CASES = {
    **{name: (name, kind, params) for name, (kind, params) in SMALL.items()},
    "cnn-utterance-norm": ("cnn", "logmel", {**SMALL["cnn"][1], **UTT}),
    "crnn-utterance-norm": ("crnn", "logmel", {**SMALL["crnn"][1], **UTT}),
    "rnn-pooled": ("rnn", "mfcc", {**SMALL["rnn"][1], **UTT, "cell": "gru", "frame_pool": 3}),
    "cnn-x2-ensemble": (
        "ensemble",
        "logmel",
        {"members": [{"name": "cnn", "params": {**SMALL["cnn"][1], **UTT}}] * 2},  # members differ: built in turn
    ),
    # the architecture ensemble (cnn+crnn+rnn): log-mel rows 0-63 for the cnn and crnn, MFCC rows 64-123 for the rnn
    "cnn+crnn+rnn-ensemble": (
        "ensemble",
        "logmel+mfcc",
        {
            "members": [
                {"name": "cnn", "params": {**SMALL["cnn"][1], **UTT}},
                {"name": "crnn", "params": {**SMALL["crnn"][1], **UTT}},
                {"name": "rnn", "params": {**SMALL["rnn"][1], **UTT, "cell": "gru", "frame_pool": 3}},
            ],
            "rows": [[0, 64], [0, 64], [64, 124]],
        },
    ),
}


@pytest.fixture(scope="module")
def real_clips(ravdess_dir):
    """Audio of 4 real RAVDESS clips (2 actors, 4 emotions), 16 kHz mono float32."""
    from ser.audio import load_audio

    paths = sorted(ravdess_dir.rglob("03-01-0[2-5]-02-01-01-0[12].*"))[:4]
    assert len(paths) == 4
    return [load_audio(p) for p in paths]


@pytest.mark.parametrize("name", list(CASES))
def test_parity_on_real_clips(name, real_clips, tmp_path):
    model_name, kind, params = CASES[name]
    pre = Preprocessing(kind=kind, feature_config=FeatureConfig().to_dict())
    feats = [pre.features(y) for y in real_clips]
    model = build_model(model_name, 8, feats[0].shape[0], seed=0, **params).eval()
    out = write_model_folder(
        tmp_path / name, model, labels=RAVDESS8, feature_config=FeatureConfig(), kind=kind, parity_inputs=feats
    )
    meta = read_metadata(out)
    assert meta["export"]["parity_max_abs_diff"] <= 1e-4 and meta["export"]["parity_inputs"] == 4
    # and on clips shorter than any pooling window (1, 2, 4 frames: the partial-window edge of ceil-mode pools)
    assert parity(model, out / "model.onnx", feats + [feats[0][:, :n] for n in (1, 2, 4)]) <= 1e-4
    # the folder predicts with onnxruntime, from raw audio, exactly what torch gives on the same features
    pred = Predictor(out, warmup=False)
    for y, x in zip(real_clips, feats, strict=True):
        with torch.inference_mode():
            ref = softmax(model(torch.from_numpy(x[None])).numpy()[0])
        np.testing.assert_allclose(pred.predict_proba(y), ref, atol=1e-5)
        r = pred.predict(y).to_dict()
        assert r["label"] in RAVDESS8 and abs(sum(r["probabilities"].values()) - 1) < 1e-9


def test_window_mode_and_helpers(real_clips, tmp_path):
    assert window_starts(100, 300, 150) == [0]
    assert window_starts(700, 300, 150) == [0, 150, 300, 400]
    model = build_model("cnn", 8, 64, seed=0, **SMALL["cnn"][1]).eval()
    out = write_model_folder(
        tmp_path / "w", model, labels=RAVDESS8, feature_config=FeatureConfig(), eval_mode="windows", window=100, hop=50
    )
    pred = Predictor(out, warmup=False)
    x = pred.pre.features(real_clips[0])
    starts = window_starts(x.shape[1], 100, 50)
    with torch.inference_mode():
        logits = np.mean([model(torch.from_numpy(x[None, :, s : s + 100])).numpy()[0] for s in starts], axis=0)
    np.testing.assert_allclose(pred.predict_proba(real_clips[0]), softmax(logits), atol=1e-5)


def test_failed_parity_writes_nothing(tmp_path, monkeypatch):
    import ser.export as E

    model = build_model("cnn", 8, 64, seed=0, **SMALL["cnn"][1]).eval()
    monkeypatch.setattr(E, "parity", lambda *a, **k: 1.0)
    with pytest.raises(SerError, match="parity"):
        write_model_folder(tmp_path / "m", model, labels=RAVDESS8, feature_config=FeatureConfig())
    assert not (tmp_path / "m").exists() and not list(tmp_path.iterdir())


def test_export_refuses_wrong_inputs(tmp_path):
    model = build_model("cnn", 8, 64, seed=0, **SMALL["cnn"][1])
    with pytest.raises(ConfigError, match="labels"):
        write_model_folder(tmp_path / "m", model, labels=["a", "b"], feature_config=FeatureConfig())
    from ser.export import export_onnx

    with pytest.raises(ConfigError, match="SerModel"):
        export_onnx(object(), tmp_path / "x.onnx")


def test_bad_model_folders(tmp_path):
    with pytest.raises(SerError, match=r"metadata\.json"):
        Predictor(tmp_path)
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(SerError, match="not valid JSON"):
        read_metadata(tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(SerError, match="format"):
        read_metadata(tmp_path)
