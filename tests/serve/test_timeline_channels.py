"""``POST /v1/timeline?channels=split``: one timeline per channel of a stereo call, and the 422s for inputs that
cannot be split (synthetic audio, tiny untrained model)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.batch.conftest import silence, voice
from tests.conftest import export_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("channels") / "m", "1")


def _wav(y: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, 16_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


STEREO = np.stack(
    [np.concatenate([voice(1.5), silence(2.0)]), np.concatenate([silence(2.0), voice(1.5, 250.0)])], axis=1
)


def _error(r, code: str) -> str:
    assert r.status_code == 422, r.text
    body = r.json()["error"]
    assert body["code"] == code
    return body["message"]


def test_split_gives_one_named_timeline_per_channel(make_client):
    c = make_client()
    r = c.post("/v1/timeline?channels=split&channel_names=agent,customer", files={"file": ("call.wav", _wav(STEREO))})
    assert r.status_code == 200, r.text
    d = r.json()
    assert [ch["channel"] for ch in d["channels"]] == ["agent", "customer"]
    assert d["duration_s"] == pytest.approx(3.5, abs=1e-3)
    agent, customer = d["channels"]
    # the agent speaks in the first 1.5 s, the customer from 2 s on: each channel's segments are its own
    assert agent["segments"] and all(s["end_s"] <= 1.6 for s in agent["segments"])
    assert customer["segments"] and all(s["start_s"] >= 1.9 for s in customer["segments"])
    for ch in d["channels"]:
        assert ch["summary"]["voiced_s"] == pytest.approx(1.5, abs=0.1)
        assert sum(ch["summary"]["shares"].values()) == pytest.approx(1.0)
        assert all(s["prediction_id"] for s in ch["segments"])
    default = c.post("/v1/timeline?channels=split", files={"file": ("call.wav", _wav(STEREO))}).json()
    assert [ch["channel"] for ch in default["channels"]] == ["ch0", "ch1"]


def test_mix_is_unchanged_by_the_option(make_client):
    c = make_client()
    mixed = c.post("/v1/timeline", files={"file": ("call.wav", _wav(STEREO))}).json()
    explicit = c.post("/v1/timeline?channels=mix", files={"file": ("call.wav", _wav(STEREO))}).json()
    assert "channels" not in mixed and mixed["summary"]["voiced_s"] == pytest.approx(3.0, abs=0.2)
    assert [s["label"] for s in explicit["segments"]] == [s["label"] for s in mixed["segments"]]


def test_inputs_that_cannot_be_split_are_422s(make_client):
    c = make_client()
    mono = _wav(voice(2.0))
    assert "mono recording" in _error(
        c.post("/v1/timeline?channels=split", files={"file": ("m.wav", mono)}), "bad_channels"
    )
    three = c.post("/v1/timeline?channels=split&channel_names=a,b,c", files={"file": ("call.wav", _wav(STEREO))})
    assert "2 channels but 3 channel names" in _error(three, "bad_channels")
    dup = c.post("/v1/timeline?channels=split&channel_names=a,a", files={"file": ("call.wav", _wav(STEREO))})
    assert "unique" in _error(dup, "bad_channels")
    names_without_split = c.post("/v1/timeline?channel_names=a,b", files={"file": ("call.wav", _wav(STEREO))})
    assert "channels=split" in _error(names_without_split, "bad_channels")
    assert c.post("/v1/timeline?channels=both", files={"file": ("m.wav", mono)}).status_code == 422
