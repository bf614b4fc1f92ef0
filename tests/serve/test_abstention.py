"""Abstention: under ``abstain_below`` (``SER_ABSTAIN_BELOW``) an answer is labelled ``uncertain`` with its
probabilities; counted as such in ``ser_predictions_total``, logged with the model's class; ``ser predict
--abstain-below`` does the same. The untrained test model's top probability is far below 0.9 on any clip."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ser.monitor.log import read_log
from ser.serve.app import create_app
from ser.serve.engine import ModelHolder
from ser.serve.settings import Settings
from tests.conftest import RAVDESS8, export_tiny_model, write_wav


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("abstain") / "m", "1")


def sine(seconds: float) -> np.ndarray:
    """A 440 Hz sine: webrtcvad takes a steady tone for voice, so the speech gate lets it through."""
    return (0.5 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * 16_000)) / 16_000)).astype(np.float32)


def _wav(y) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, 16_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def voiced() -> bytes:
    return _wav(sine(1.5))


def _uncertain(d: dict) -> None:
    assert d["label"] == "uncertain" and d["abstained"] is True and d["speech"] is True
    assert set(d["probabilities"]) == set(RAVDESS8)
    assert d["confidence"] == pytest.approx(max(d["probabilities"].values())) and d["confidence"] < 0.9


def test_predict_and_batch_abstain_below_the_threshold(make_client, voiced):
    plain = make_client().post("/v1/predict", files={"file": ("a.wav", voiced)}).json()
    assert plain["label"] in RAVDESS8 and plain["abstained"] is False  # no threshold: always a class
    c = make_client(abstain_below=0.9)
    _uncertain(c.post("/v1/predict", files={"file": ("a.wav", voiced)}).json())
    batch = c.post("/v1/predict/batch", files=[("files", ("a.wav", voiced)), ("files", ("b.wav", voiced))]).json()
    assert batch["n_ok"] == 2
    for item in batch["results"]:
        _uncertain(item["result"])
    silent = c.post("/v1/predict", files={"file": ("s.wav", _wav(np.zeros(16_000, dtype=np.float32)))}).json()
    assert silent["speech"] is False and silent["label"] is None and silent["abstained"] is False
    samples = [s for f in text_string_to_metric_families(c.get("/metrics").text) for s in f.samples]
    counted = sum(
        s.value for s in samples if s.name == "ser_predictions_total" and s.labels.get("emotion") == "uncertain"
    )
    assert counted == 3  # one /v1/predict, two batch items


def test_abstention_setting_from_env_and_bounds():
    assert Settings.from_env({"SER_ABSTAIN_BELOW": "0.4"}).abstain_below == 0.4
    assert Settings.from_env({}).abstain_below is None
    for bad in (0, 1.5):
        with pytest.raises(ValueError):
            Settings(abstain_below=bad)


def test_an_abstention_is_logged_with_the_model_class(model_dir, voiced, tmp_path):
    h = ModelHolder(model_dir)
    assert h.reload().ok
    s = Settings(model_dir=model_dir, prediction_log=str(tmp_path / "log"), abstain_below=0.9)
    with TestClient(create_app(s, holder=h)) as c:
        answer = c.post("/v1/predict", files={"file": ("a.wav", voiced)}).json()
    _uncertain(answer)
    row = read_log(tmp_path / "log").to_pylist()[0]
    top = max(answer["probabilities"], key=answer["probabilities"].__getitem__)
    assert row["prediction_id"] == answer["prediction_id"] and row["label"] == top  # drift / accuracy: the model's
    assert row["confidence"] == pytest.approx(answer["confidence"])


def test_cli_predict_abstains(run_cli, model_dir, tmp_path):
    clip = write_wav(tmp_path / "a.wav", sine(1.5))
    code, out, err = run_cli("predict", clip, "--model", model_dir, "--json", "--abstain-below", "0.9")
    assert code == 0, err
    _uncertain(json.loads(out)[0])
    code, out, _ = run_cli("predict", clip, "--model", model_dir, "--json")
    assert json.loads(out)[0]["label"] in RAVDESS8
    code, out, _ = run_cli("predict", clip, "--model", model_dir, "--abstain-below", "0.9")
    assert code == 0 and "uncertain" in out
    code, _, err = run_cli("predict", clip, "--model", model_dir, "--abstain-below", "2")
    assert code == 2 and "abstain-below" in err
