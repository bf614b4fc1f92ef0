"""Hosting platforms: Vertex AI's custom-container contract (``AIP_PREDICT_ROUTE`` / ``AIP_HEALTH_ROUTE``: base64
instances in, one ``/v1/predict`` answer per instance out, every bad request a JSON 4xx) and the listening port
(``SER_PORT``, ``AIP_HTTP_PORT``, ``PORT``) of ``ser serve``, on synthetic audio and a tiny exported model."""

from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from ser.serve.app import Settings, create_app
from ser.serve.platform import PORT_VARIABLES, listen_port
from ser.serve.routes.vertex import body_limit
from tests.conftest import export_tiny_model, tone

PREDICT = "/v1/endpoints/123/deployedModels/456:predict"
HEALTH = "/v1/endpoints/123/deployedModels/456"
VERTEX = {"vertex_predict_route": PREDICT, "vertex_health_route": HEALTH}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("vertex") / "m", "3")


def wav(y: np.ndarray, sr: int = 16_000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def clips() -> list[bytes]:
    rng = np.random.default_rng(0)
    return [
        wav(tone(1.5, freq=180.0)),
        wav(tone(1.0, freq=300.0, amp=0.5) + 0.01 * rng.standard_normal(16_000).astype(np.float32)),
        wav(np.zeros(16_000, np.float32)),  # silence: an answer without a label
    ]


def instances(*blobs: bytes) -> dict[str, Any]:
    return {"instances": [{"b64": base64.b64encode(b).decode()} for b in blobs]}


STABLE = ("label", "confidence", "probabilities", "speech", "reason", "duration_s", "model_version", "model_name")


def test_predictions_are_the_predict_answers(make_client, clips):
    c = make_client(**VERTEX)
    r = c.post(PREDICT, json=instances(*clips))
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == len(clips)
    for clip, pred in zip(clips, preds, strict=True):
        one = c.post("/v1/predict", content=clip, headers={"content-type": "audio/wav"}).json()
        assert {k: pred[k] for k in STABLE} == {k: one[k] for k in STABLE}
        assert pred["prediction_id"] and pred["prediction_id"] != one["prediction_id"]
    assert preds[0]["speech"] and preds[0]["label"] in preds[0]["probabilities"]
    assert preds[2]["speech"] is False and preds[2]["label"] is None and preds[2]["reason"] == "no_speech"
    assert preds[0]["model_version"] == "3"
    metrics = c.get("/metrics").text
    assert re.search(r'ser_predictions_total\{[^}]*endpoint="vertex"[^}]*\} 2\.0', metrics)
    assert 'ser_no_speech_total{endpoint="vertex",reason="no_speech"} 1.0' in metrics


def test_parameters_are_accepted(make_client, clips):
    r = make_client(**VERTEX).post(PREDICT, json={**instances(clips[0]), "parameters": {"anything": 1}})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1


def test_health_route_is_readiness_and_open(make_client):
    c = make_client(**VERTEX, api_keys=["alice:k1"])
    r = c.get(HEALTH)
    assert r.status_code == 200 and r.json() == {"status": "ready", "model_name": "ser-emotion", "model_version": "3"}


def test_predict_route_needs_a_key_as_the_others(make_client, clips):
    c = make_client(**VERTEX, api_keys=["alice:k1"])
    r = c.post(PREDICT, json=instances(clips[0]))
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert c.post(PREDICT, json=instances(clips[0]), headers={"X-API-Key": "k1"}).status_code == 200
    assert c.post(PREDICT, json=instances(clips[0]), headers={"Authorization": "Bearer k1"}).status_code == 200


def _error(r) -> tuple[int, str, str]:
    body = r.json()
    assert set(body) == {"error"}, body
    return r.status_code, body["error"]["code"], body["error"]["message"]


def test_bad_requests_are_json_4xx(make_client, clips):
    c = make_client(**VERTEX, max_batch_files=3)
    good = base64.b64encode(clips[0]).decode()
    cases = [
        (c.post(PREDICT, content=b"{not json", headers={"content-type": "application/json"}), 400, "bad_json"),
        (c.post(PREDICT, content=clips[0], headers={"content-type": "audio/wav"}), 415, "unsupported_media_type"),
        (c.post(PREDICT, json={"inputs": [{"b64": good}]}), 422, "invalid_request"),
        (c.post(PREDICT, json={"instances": []}), 422, "invalid_request"),
        (c.post(PREDICT, json={"instances": [{"b64": good, "mime": "audio/wav"}]}), 422, "invalid_request"),
        (c.post(PREDICT, json={"instances": [{"bytes": good}]}), 422, "invalid_request"),
        (c.post(PREDICT, json={"instances": ["raw string"]}), 422, "invalid_request"),
        (c.post(PREDICT, json={"instances": [{"b64": good}] * 4}), 422, "too_many_instances"),
        (c.post(PREDICT, json={"instances": [{"b64": good}, {"b64": "no*base64!"}]}), 400, "bad_base64"),
        (c.post(PREDICT, json=instances(clips[0], b"")), 400, "empty_audio"),
        (c.post(PREDICT, json=instances(b"RIFF not really a wave file at all")), 422, "undecodable_audio"),
    ]
    for r, status, code in cases:
        got = _error(r)
        assert got[:2] == (status, code), (got, r.request.content[:80])
    assert "instances[1]" in _error(cases[8][0])[2]
    assert "instances[1]" in _error(cases[9][0])[2]
    assert "instances[0]" in _error(cases[10][0])[2]


def test_bounded_like_other_uploads(make_client, clips):
    assert len(clips[1]) < len(clips[0])
    small = make_client(**VERTEX, max_upload_bytes=len(clips[1]), max_batch_bytes=3 * len(clips[0]))
    status, code, message = _error(small.post(PREDICT, json=instances(clips[1], clips[0])))
    assert (status, code) == (413, "too_large") and message.startswith("instances[1]")
    total = make_client(**VERTEX, max_batch_bytes=len(clips[0]) + 10, max_upload_bytes=len(clips[0]) + 10)
    assert _error(total.post(PREDICT, json=instances(clips[0], clips[0])))[:2] == (413, "too_large")
    # the body itself: refused on its declared length, before it is read or parsed
    settings = Settings(model_dir=Path("m"), max_batch_bytes=1000)
    assert body_limit(settings) == 4 * 334 + 64 * 1024
    tiny = make_client(**VERTEX, max_batch_bytes=1000)
    r = tiny.post(PREDICT, content=b"x" * (body_limit(settings) + 1), headers={"content-type": "application/json"})
    assert _error(r)[:2] == (413, "too_large")
    long = make_client(**VERTEX, max_audio_s=1.0)
    assert _error(long.post(PREDICT, json=instances(clips[0])))[:2] == (422, "audio_too_long")


def test_not_mounted_unless_set(make_client, clips):
    c = make_client()
    assert c.post(PREDICT, json=instances(clips[0])).status_code == 404
    assert c.get(HEALTH).status_code == 404
    only_health = make_client(vertex_health_route="/health")
    assert only_health.get("/health").status_code == 200
    assert only_health.post(PREDICT, json=instances(clips[0])).status_code == 404


def test_routes_in_the_openapi_document(make_client):
    spec = make_client(**VERTEX).get("/openapi.json").json()
    op = spec["paths"][PREDICT]["post"]
    assert op["tags"] == ["vertex"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["instances"] and schema["properties"]["instances"]["items"]["required"] == ["b64"]
    assert "predictions" in str(op["responses"]["200"]) or "VertexOut" in str(op["responses"]["200"])
    assert set(spec["paths"][HEALTH]) == {"get"}


def test_settings_from_the_platform_environment():
    env = {"AIP_PREDICT_ROUTE": PREDICT, "AIP_HEALTH_ROUTE": HEALTH, "AIP_HTTP_PORT": "8080"}
    s = Settings.from_env(env)
    assert (s.vertex_predict_route, s.vertex_health_route) == (PREDICT, HEALTH)
    s = Settings.from_env({**env, "SER_VERTEX_PREDICT_ROUTE": "/predict"})
    assert s.vertex_predict_route == "/predict" and s.vertex_health_route == HEALTH
    assert Settings.from_env({}).vertex_predict_route is None
    for bad in ("predict", "/p?x=1", "/a b", "/{x}"):
        with pytest.raises(ValueError, match="absolute URL path"):
            Settings.from_env({"AIP_PREDICT_ROUTE": bad})


def test_a_route_of_the_service_is_refused(model_dir):
    for kw in ({"vertex_predict_route": "/v1/predict"}, {"vertex_health_route": "/healthz"}):
        with pytest.raises(ValueError, match="already a route"):
            create_app(Settings(model_dir=model_dir, **kw))
    app = create_app(Settings(model_dir=model_dir, vertex_health_route="/readyz"))  # that route already is readiness
    assert app is not None


# ------------------------------------------------------------------------------------------------ the port


def test_listen_port_order():
    assert PORT_VARIABLES == ("SER_PORT", "AIP_HTTP_PORT", "PORT")
    assert listen_port({}) == 8000
    assert listen_port({"PORT": "8081"}) == 8081
    assert listen_port({"PORT": "8081", "AIP_HTTP_PORT": "8080"}) == 8080
    assert listen_port({"PORT": "8081", "AIP_HTTP_PORT": "8080", "SER_PORT": "9000"}) == 9000
    assert listen_port({"SER_PORT": " ", "PORT": "8081"}) == 8081
    for bad in ("http", "0", "70000", "-1"):
        with pytest.raises(ValueError, match="PORT"):
            listen_port({"PORT": bad})


def test_serve_command_takes_the_platform_port(run_cli, model_dir, monkeypatch):
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    for var in [v for v in os.environ if v.startswith(("SER_", "AIP_")) or v == "PORT"]:
        monkeypatch.delenv(var)
    assert run_cli("serve", "--model", model_dir)[0] == 0 and seen["port"] == 8000
    monkeypatch.setenv("PORT", "8081")  # Cloud Run
    code, out, _ = run_cli("serve", "--model", model_dir)
    assert code == 0 and seen["port"] == 8081 and ":8081" in out
    monkeypatch.setenv("AIP_HTTP_PORT", "8080")  # Vertex AI, with its routes
    monkeypatch.setenv("AIP_PREDICT_ROUTE", PREDICT)
    assert run_cli("serve", "--model", model_dir)[0] == 0 and seen["port"] == 8080
    assert seen["app"].state.settings.vertex_predict_route == PREDICT
    assert run_cli("serve", "--model", model_dir, "--port", "7000")[0] == 0 and seen["port"] == 7000
    monkeypatch.setenv("PORT", "eighty")
    monkeypatch.delenv("AIP_HTTP_PORT")
    code, _, err = run_cli("serve", "--model", model_dir)
    assert code == 2 and "PORT='eighty'" in err
