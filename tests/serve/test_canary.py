"""The canary in the service: the share of requests it answers (sticky per X-Client-Id, random without one), answers
that carry the version that produced them (and the log's ``role``), the champion answering when the canary fails,
and the automatic rollback — by errors, by low live UAR from feedback, not under the minimum counts — with its
event, metrics and log line, kept across a restart. Tiny untrained models and synthetic tones (no shared data)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ser.inference import Predictor
from ser.monitor.canary import read_rollbacks
from ser.monitor.log import read_log
from ser.serve.app import create_app
from ser.serve.engine import ModelHolder
from ser.serve.settings import Settings
from tests.conftest import RAVDESS8, export_tiny_model, tone


@pytest.fixture(scope="module")
def champion_dir(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("champion") / "m", "1")


@pytest.fixture(scope="module")
def canary_dir(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("canary") / "m", "2")


VOICED = [150.0, 160.0, 170.0, 180.0, *np.arange(250.0, 350.0, 10.0)]
"""Tone frequencies the service's voice gate takes for speech (190-240 Hz are answered "no speech")."""


def wav(i: int = 0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(1.5, freq=VOICED[i % len(VOICED)]), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class BrokenPredictor(Predictor):
    """A canary whose model loads (and warms up) fine, then fails on every request."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.broken = True

    def proba_and_features(self, audio):
        if getattr(self, "broken", False):
            raise RuntimeError("broken canary graph")
        return super().proba_and_features(audio)


@pytest.fixture
def clients(champion_dir, canary_dir, tmp_path):
    """``make(**settings)`` → a started TestClient with ``canary_dir`` as a loaded canary, logging under
    ``tmp_path/log``; ``broken=True`` loads it through :class:`BrokenPredictor`."""
    opened: list[TestClient] = []

    def make(broken: bool = False, **kw) -> TestClient:
        kw = {"model_dir": champion_dir, "prediction_log": str(tmp_path / "log" / "predictions"),
              "shadow_ref": str(canary_dir), "shadow_mode": "canary", **kw}  # fmt: skip
        holder = ModelHolder(champion_dir)
        assert holder.reload().ok
        c = TestClient(create_app(Settings(**kw), holder=holder))
        c.__enter__()
        opened.append(c)
        runner = c.app.state.monitor.canary
        if broken:
            runner.holder = ModelHolder(canary_dir, loader=lambda path, threads: BrokenPredictor(path, threads=threads))
        assert runner.holder.reload().ok
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def predict(c: TestClient, i: int = 0, client_id: str | None = None) -> dict:
    headers = {"X-Client-Id": client_id} if client_id else {}
    r = c.post("/v1/predict", files={"file": (f"clip{i}.wav", wav(i))}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def samples(c: TestClient) -> list:
    return [s for fam in text_string_to_metric_families(c.get("/metrics").text) for s in fam.samples]


def value(ss, name: str, **labels) -> float:
    return sum(s.value for s in ss if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_settings_block():
    block = Settings(shadow_ref="challenger", shadow_mode="canary", canary_share=0.25).second_model()
    assert block.mode == "canary" and block.share == 0.25 and block.rollback.min_requests == 200
    assert Settings(shadow_ref="challenger").second_model().rollback is None  # shadow: no rollback rule
    env = Settings.from_env({"SER_SHADOW_REF": "challenger", "SER_SHADOW_MODE": "canary", "SER_CANARY_SHARE": "0.3"})
    assert env.second_model().share == 0.3
    with pytest.raises(ValueError):
        Settings(shadow_ref="c", shadow_mode="blue-green")


def test_share_routes_requests_and_answers_carry_their_version(clients):
    every = clients(canary_share=1.0)
    answers = [predict(every, i) for i in range(4)]
    assert {a["model_version"] for a in answers} == {"2"}
    batch = every.post("/v1/predict/batch", files=[("files", (f"b{i}.wav", wav(i))) for i in range(2)]).json()
    assert batch["model_version"] == "2" and {r["result"]["model_version"] for r in batch["results"]} == {"2"}
    # the timeline stays on the champion
    assert every.post("/v1/timeline", files={"file": ("t.wav", wav())}).json()["model_version"] == "1"
    mon = every.app.state.monitor
    mon.flush()
    rows = read_log(mon.root).to_pylist()
    by_id = {r["prediction_id"]: r for r in rows if r["route"] == "/v1/predict"}
    assert {(by_id[a["prediction_id"]]["role"], by_id[a["prediction_id"]]["model_version"]) for a in answers} == {
        ("canary", "2")
    }
    m = samples(every)
    assert value(m, "ser_canary_requests_total", side="canary", model_version="2", result="ok") == 5
    assert value(m, "ser_canary_active", model_version="2") == 1
    assert value(m, "ser_predictions_total", model_version="2") == 6  # 4 single + 2 batch items

    none = clients(canary_share=0.0)
    assert {predict(none, i)["model_version"] for i in range(4)} == {"1"}


def test_sticky_per_client_and_random_without_an_id(clients):
    c = clients(canary_share=0.5)
    sides = {}
    for k in range(16):
        cid = f"client-{k}"
        seen = {predict(c, i, cid)["model_version"] for i in range(2)}
        assert len(seen) == 1, cid  # one client stays on one side
        sides[cid] = seen.pop()
    assert set(sides.values()) == {"1", "2"}  # the share splits the clients
    anonymous = [predict(c, i)["model_version"] for i in range(20)]
    assert set(anonymous) == {"1", "2"}  # random per request


def test_broken_canary_is_answered_by_the_champion_and_rolled_back_on_errors(clients, tmp_path, caplog):
    c = clients(broken=True, canary_share=0.5, canary_min_requests=5)
    caplog.set_level(logging.WARNING, logger="ser.serve")
    versions = [predict(c, i, f"client-{i}")["model_version"] for i in range(30)]
    assert set(versions) == {"1"}  # every failed canary request was answered by the champion
    runner = c.app.state.monitor.canary
    assert runner.rollback is not None and runner.rollback["cause"] == "error_rate"
    assert runner.rollback["sides"]["canary"]["errors"] == runner.rollback["sides"]["canary"]["requests"] >= 5
    assert runner.pick("client-1") is None and all(runner.pick(None) is None for _ in range(20))  # no more traffic
    m = samples(c)
    assert value(m, "ser_canary_active", model_version="2") == 0
    assert value(m, "ser_canary_rollbacks_total", model_version="2", cause="error_rate") == 1
    assert value(m, "ser_canary_requests_total", side="canary", result="error") >= 5
    assert any("canary v2 rolled back" in r.getMessage() for r in caplog.records)
    [event] = read_rollbacks(tmp_path / "log")
    assert event["version"] == "2" and event["reason"].startswith("error rate 100.0 %")
    # another process (or a restart) on the same log: the rolled-back version gets no traffic
    again = clients(canary_share=1.0)
    assert predict(again, 0)["model_version"] == "1" and again.app.state.monitor.canary.rollback["version"] == "2"


def _feedback(c: TestClient, answers: list[dict], wrong_on: str) -> None:
    """Feedback on every answer: the answer itself is right, except for answers of version ``wrong_on``."""
    for a in answers:
        label = a["label"] if a["model_version"] != wrong_on else RAVDESS8[(RAVDESS8.index(a["label"]) + 1) % 8]
        r = c.post("/v1/feedback", json={"prediction_id": a["prediction_id"], "label": label})
        assert r.status_code == 202, r.text


def test_low_live_uar_rolls_the_canary_back(clients, tmp_path):
    c = clients(canary_share=0.5, canary_min_feedback=5, canary_min_requests=10_000)
    answers = [predict(c, i) for i in range(40)]
    assert {a["model_version"] for a in answers} == {"1", "2"}
    runner = c.app.state.monitor.canary
    assert runner.rollback is None
    _feedback(c, answers, wrong_on="2")
    assert runner.rollback is not None and runner.rollback["cause"] == "live_uar"
    assert runner.rollback["sides"]["canary"]["uar"] == 0.0 and runner.rollback["sides"]["champion"]["uar"] == 1.0
    assert {predict(c, i)["model_version"] for i in range(10)} == {"1"}
    m = samples(c)
    assert value(m, "ser_canary_rollbacks_total", model_version="2", cause="live_uar") == 1
    assert [e["cause"] for e in read_rollbacks(tmp_path / "log")] == ["live_uar"]


def test_no_rollback_under_the_minimum_counts(clients, tmp_path):
    bad = clients(canary_share=0.5, canary_min_feedback=50, canary_min_requests=10_000)
    answers = [predict(bad, i) for i in range(30)]
    _feedback(bad, answers, wrong_on="2")  # every canary answer wrong, but fewer than 50 labelled
    assert bad.app.state.monitor.canary.rollback is None
    broken = clients(broken=True, canary_share=0.5, canary_min_requests=100)
    for i in range(30):
        predict(broken, i)
    runner = broken.app.state.monitor.canary
    assert runner.rollback is None and runner.guard.sides()["canary"].errors > 0
    assert value(samples(broken), "ser_canary_active", model_version="2") == 1
    assert read_rollbacks(tmp_path / "log") == []
    assert np.mean([predict(broken, i)["model_version"] == "1" for i in range(5)]) == 1.0
