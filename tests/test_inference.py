"""onnxruntime inference: the folder's temperature divides the logits; abstention below a threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ser.errors import SerError
from ser.inference import UNCERTAIN, Predictor, decide, softmax
from tests.conftest import export_tiny_model, tone


def _with_calibration(folder, cal) -> None:
    meta = json.loads((folder / "metadata.json").read_text())
    meta["calibration"] = cal
    (folder / "metadata.json").write_text(json.dumps(meta))


def test_predictor_applies_the_folder_temperature(tmp_path):
    plain = export_tiny_model(tmp_path / "plain")
    hot = export_tiny_model(tmp_path / "hot")
    _with_calibration(hot, {"method": "temperature", "temperature": 0.25})
    a, b = Predictor(plain, warmup=False), Predictor(hot, warmup=False)
    assert a.temperature == 1.0 and b.temperature == 0.25
    audio = tone(1.0)
    logits = a.logits(a.pre.features(audio))  # the same graph in both folders: the same logits
    np.testing.assert_allclose(a.predict_proba(audio), softmax(logits), atol=1e-6)
    np.testing.assert_allclose(b.predict_proba(audio), softmax(logits / 0.25), atol=1e-6)
    assert b.predict_proba(audio).max() > a.predict_proba(audio).max()  # T < 1 sharpens, the arg-max stays
    assert b.predict_proba(audio).argmax() == a.predict_proba(audio).argmax()
    _with_calibration(hot, {"method": "temperature", "temperature": -1})
    with pytest.raises(SerError, match="calibration"):
        Predictor(hot, warmup=False)


def test_decide_abstains_below_the_threshold():
    labels = ["a", "b", "c"]
    p = np.array([0.2, 0.5, 0.3])
    assert decide(labels, p) == ("b", 0.5, False)
    assert decide(labels, p, 0.5) == ("b", 0.5, False)  # at the threshold: answered
    assert decide(labels, p, 0.6) == (UNCERTAIN, 0.5, True)
