"""The HTTP API on real RAVDESS clips and an exported (untrained) model: every route, every bad input as a JSON 4xx,
API keys, limits, batch, timeline, hot reload under concurrent load, Prometheus metrics, and no PyTorch import."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ser.serve.app import create_app
from ser.serve.engine import ModelHolder
from ser.serve.settings import Settings
from ser.serve.uploads import parse_multipart
from tests.conftest import RAVDESS8, export_tiny_model

LABELS = RAVDESS8
CLIPS = {  # Actor_01, statement 1, repetition 1
    "neutral": "03-01-01-01-01-01-01.flac",
    "happy": "03-01-03-02-01-01-01.flac",
    "angry": "03-01-05-02-01-01-01.flac",
    "sad": "03-01-04-01-01-01-01.flac",
}

ADMIN = {"X-API-Key": "adm"}  # the admin key of the tests that reload (admin routes are off without a key)

pytestmark = pytest.mark.shared_data


# ------------------------------------------------------------------------------------------------ fixtures


def _export(path: Path, version: str) -> Path:
    return export_tiny_model(path, version, metrics={"uar": 0.125, "accuracy": 0.125})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("serve") / "m", "1")


@pytest.fixture(scope="module")
def clips(ravdess_dir) -> dict[str, bytes]:
    return {k: (ravdess_dir / "Actor_01" / name).read_bytes() for k, name in CLIPS.items()}


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def _wav(y: np.ndarray, sr: int = 16_000, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _wav_with_codec(tag: int) -> bytes:
    """A RIFF/WAVE header naming codec ``tag`` (e.g. 0x55 MPEG layer 3) over some bytes."""
    fmt = struct.pack("<HHIIHHH", tag, 1, 16000, 32000, 2, 16, 0)
    data = bytes(4000)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _assert_error(r, status: int, code: str | tuple[str, ...]) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] in ((code,) if isinstance(code, str) else code), err
    assert isinstance(err["message"], str) and err["message"]
    return err


def _assert_prediction(d: dict, version: str = "1") -> None:
    assert d["label"] in LABELS and set(d["probabilities"]) == set(LABELS)
    assert sum(d["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert d["confidence"] == pytest.approx(max(d["probabilities"].values()))
    assert d["model_version"] == version and d["model_name"] == "ser-emotion"
    assert d["duration_s"] > 0 and d["processing_ms"] > 0


def _metrics(client: TestClient) -> dict[str, list]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def _value(samples, sample_name: str, /, **labels) -> float:
    """Sum of the samples called ``sample_name`` whose labels include ``labels``."""
    return sum(
        s.value for s in samples if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    )


# ------------------------------------------------------------------------------------------------ routes


def test_health_ready_model(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "model_name": "ser-emotion", "model_version": "1"}
    info = client.get("/v1/model").json()
    assert info["labels"] == LABELS and info["version"] == "1" and info["sample_rate"] == 16000
    assert info["metrics"] == {"uar": 0.125, "accuracy": 0.125} and info["model"]["name"] == "cnn"


def test_predict_multipart_and_raw_body(client, clips):
    for name, data in clips.items():
        r = client.post("/v1/predict", files={"file": (f"{name}.flac", data, "audio/flac")})
        assert r.status_code == 200, r.text
        _assert_prediction(r.json())
        assert r.json()["filename"] == f"{name}.flac"
    raw = client.post("/v1/predict", content=clips["angry"], headers={"content-type": "audio/flac"})
    assert raw.status_code == 200
    _assert_prediction(raw.json())
    multipart = client.post("/v1/predict", files={"file": ("a.flac", clips["angry"])}).json()
    assert raw.json()["probabilities"] == pytest.approx(multipart["probabilities"])
    octet = client.post("/v1/predict", content=clips["sad"], headers={"content-type": "application/octet-stream"})
    assert octet.status_code == 200


def test_predict_any_format_and_rate(client, clips):
    """The same clip as 48 kHz stereo float WAV and as OGG/Vorbis decodes to (nearly) the same answer."""
    y, sr = sf.read(io.BytesIO(clips["happy"]), dtype="float32")
    import soxr

    y48 = soxr.resample(y, sr, 48000).astype(np.float32)
    stereo = _wav(np.stack([y48, y48], axis=1), 48000, "FLOAT")
    base = client.post("/v1/predict", files={"file": ("a.flac", clips["happy"])}).json()
    r = client.post("/v1/predict", content=stereo, headers={"content-type": "audio/wav"})
    assert r.status_code == 200 and r.json()["duration_s"] == pytest.approx(base["duration_s"], abs=1e-3)
    assert r.json()["label"] == base["label"]
    ogg = client.post("/v1/predict", files={"file": ("a.ogg", _wav(y, sr, "VORBIS", "OGG"))})
    assert ogg.status_code == 200
    _assert_prediction(ogg.json())


BAD_UPLOADS = {
    "empty": (b"", 400, "empty_audio"),
    "text": (b"this is a text file, not audio\n" * 40, 422, "undecodable_audio"),
    "random bytes": (np.random.default_rng(0).bytes(5000), 422, "undecodable_audio"),
    "mp3-in-wav codec": (_wav_with_codec(0x55), 422, "undecodable_audio"),
    "m4a container": (b"\x00\x00\x00\x18ftypM4A " + bytes(3000), 422, "undecodable_audio"),
    "nan samples": (_wav(np.full(16000, np.nan, np.float32), subtype="FLOAT"), 422, "invalid_audio"),
    "inf samples": (_wav(np.full(16000, np.inf, np.float32), subtype="FLOAT"), 422, "invalid_audio"),
    "zero frames": (_wav(np.zeros(0, np.float32)), 422, ("invalid_audio", "undecodable_audio")),
    "too short": (_wav(np.zeros(100, np.float32)), 422, "invalid_audio"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_are_json_4xx(client, case):
    data, status, code = BAD_UPLOADS[case]
    _assert_error(client.post("/v1/predict", files={"file": ("x.wav", data, "audio/wav")}), status, code)
    _assert_error(client.post("/v1/predict", content=data, headers={"content-type": "audio/wav"}), status, code)


def test_corrupt_real_clip(client, clips):
    data = clips["angry"]
    for cut in (data[:60], data[: len(data) // 2], data[:44] + bytes(2000)):
        r = client.post("/v1/predict", files={"file": ("cut.flac", cut)})
        _assert_error(r, 422, ("undecodable_audio", "invalid_audio"))


def test_request_shape_errors(client, clips):
    _assert_error(
        client.post("/v1/predict", content=b"{}", headers={"content-type": "application/json"}),
        415,
        "unsupported_media_type",
    )
    _assert_error(
        client.post("/v1/predict", content=clips["angry"], headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    _assert_error(
        client.post("/v1/predict", content=clips["angry"], headers={"content-type": ""}), 415, "unsupported_media_type"
    )
    _assert_error(client.post("/v1/predict"), 422, "missing_file")
    _assert_error(client.post("/v1/predict", files={"audio": ("a.flac", clips["angry"])}), 422, "missing_file")
    _assert_error(client.post("/v1/predict", data={"file": "x"}), 415, "unsupported_media_type")  # url-encoded form
    r = client.post("/v1/predict", data={"file": "a text field"}, files={"other": ("o", b"")})  # multipart, no upload
    _assert_error(r, 422, "undecodable_audio")
    _assert_error(
        client.post("/v1/predict", content=b"junk", headers={"content-type": "multipart/form-data"}),
        400,
        "bad_multipart",
    )
    r = client.post("/v1/predict", content=b"garbage", headers={"content-type": "multipart/form-data; boundary=xyz"})
    _assert_error(r, r.status_code, ("bad_multipart", "missing_file"))
    assert r.status_code in (400, 422)
    _assert_error(client.get("/v1/predict"), 405, "method_not_allowed")
    _assert_error(client.get("/nope"), 404, "not_found")
    _assert_error(client.post("/v1/timeline?step_s=-1", files={"file": ("a", clips["angry"])}), 422, "invalid_request")
    _assert_error(
        client.post("/v1/timeline?smoothing=mean", files={"file": ("a", clips["angry"])}), 422, "invalid_request"
    )


def test_upload_and_duration_limits(make_client, clips):
    small = make_client(max_upload_bytes=10_000, max_audio_s=2.0)
    big = clips["angry"]
    assert len(big) > 10_000
    _assert_error(small.post("/v1/predict", files={"file": ("a.flac", big)}), 413, "too_large")
    _assert_error(small.post("/v1/predict", content=big, headers={"content-type": "audio/flac"}), 413, "too_large")

    def chunks():  # no content-length: the limit is enforced while reading
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    _assert_error(small.post("/v1/predict", content=chunks(), headers={"content-type": "audio/flac"}), 413, "too_large")
    short = make_client(max_audio_s=2.0)
    err = _assert_error(short.post("/v1/predict", files={"file": ("a.flac", big)}), 422, "audio_too_long")
    assert "2 s" in err["message"]
    ok = short.post("/v1/predict", files={"file": ("b.wav", _wav(np.random.default_rng(1).normal(0, 0.1, 24000)))})
    assert ok.status_code == 200  # 1.5 s is within the limit
    _assert_error(
        make_client(max_timeline_audio_s=1.0).post("/v1/timeline", files={"file": ("a", big)}), 422, "audio_too_long"
    )


def test_api_keys(make_client, clips):
    c = make_client(api_keys=["k1", "k2"])
    f = {"file": ("a.flac", clips["neutral"])}
    _assert_error(c.post("/v1/predict", files=f), 401, "unauthorized")
    _assert_error(c.post("/v1/predict", files=f, headers={"X-API-Key": "wrong"}), 401, "unauthorized")
    assert c.post("/v1/predict", files=f, headers={"X-API-Key": "k2"}).status_code == 200
    _assert_error(c.post("/v1/predict/batch", files=[("files", ("a", clips["sad"]))]), 401, "unauthorized")
    _assert_error(c.post("/v1/timeline", files=f), 401, "unauthorized")
    _assert_error(c.post("/v1/admin/reload"), 401, "unauthorized")
    assert c.post("/v1/admin/reload", headers={"X-API-Key": "k1"}).status_code == 200
    for path in ("/healthz", "/readyz"):  # probes stay open
        assert c.get(path).status_code == 200
    for path in ("/v1/model", "/metrics"):  # the rest needs the key (route by route: tests/serve/test_security.py)
        _assert_error(c.get(path), 401, "unauthorized")
        assert c.get(path, headers={"X-API-Key": "k2"}).status_code == 200
    open_client = make_client()  # no keys configured: no header needed
    assert open_client.post("/v1/predict", files=f).status_code == 200


def test_batch_mixes_good_and_bad(make_client, clips):
    c = make_client(max_upload_bytes=70_000)
    files = [
        ("files", ("neutral.flac", clips["neutral"], "audio/flac")),
        ("files", ("notes.txt", b"hello, not audio", "text/plain")),
        ("files", ("empty.wav", b"", "audio/wav")),
        ("files", ("angry.flac", clips["angry"], "audio/flac")),
        ("files", ("nan.wav", _wav(np.full(8000, np.nan, np.float32), subtype="FLOAT"), "audio/wav")),
        ("files", ("big.wav", _wav(np.zeros(40_000, np.float32)), "audio/wav")),
    ]
    r = c.post("/v1/predict/batch", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_ok"] == 2 and body["n_failed"] == 4 and body["model_version"] == "1"
    items = body["results"]
    assert [i["filename"] for i in items] == [f[1][0] for f in files]
    assert [i["ok"] for i in items] == [True, False, False, True, False, False]
    assert [i["status"] for i in items] == [200, 422, 400, 200, 422, 413]
    assert [i["error"]["code"] for i in items if not i["ok"]] == [
        "undecodable_audio",
        "empty_audio",
        "invalid_audio",
        "too_large",
    ]
    for i in items:
        if i["ok"]:
            _assert_prediction(i["result"])
    single = c.post("/v1/predict/batch", files={"file": ("a.flac", clips["sad"])})
    assert single.status_code == 200 and single.json()["n_ok"] == 1


def test_batch_request_errors(make_client, clips):
    c = make_client(max_batch_files=2)
    many = [("files", (f"{k}.flac", v)) for k, v in clips.items()]
    _assert_error(c.post("/v1/predict/batch", files=many), 422, "too_many_files")
    _assert_error(c.post("/v1/predict/batch", files={"other": ("a", b"x")}), 422, "missing_file")
    _assert_error(
        c.post("/v1/predict/batch", content=clips["sad"], headers={"content-type": "audio/flac"}),
        415,
        "unsupported_media_type",
    )
    tight = make_client(max_batch_bytes=50_000)
    _assert_error(tight.post("/v1/predict/batch", files=many), 413, "too_large")


def test_timeline_on_a_long_recording(client, clips):
    gap = np.zeros(16000, np.float32)
    parts = [gap]
    for name in ("neutral", "angry", "sad", "happy"):
        parts += [sf.read(io.BytesIO(clips[name]), dtype="float32")[0], gap]
    recording = np.concatenate(parts)
    r = client.post("/v1/timeline?step_s=0.5&smoothing=median", files={"file": ("rec.wav", _wav(recording))})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["model_version"] == "1" and d["labels"] == LABELS
    assert d["duration_s"] == pytest.approx(recording.size / 16000, abs=1e-3)
    assert len(d["segments"]) >= 4
    for s in d["segments"]:
        assert 0 <= s["start_s"] < s["end_s"] <= d["duration_s"] and s["end_s"] - s["start_s"] <= 4.0 + 1e-6
        assert sum(s["probabilities"].values()) == pytest.approx(1.0)
    g = d["timeline"]
    n = len(g["times_s"])
    assert n == int(np.ceil(d["duration_s"] / 0.5)) and len(g["voiced"]) == n
    assert all(len(v) == n for v in g["probabilities"].values())
    assert not g["voiced"][0] and any(g["voiced"])
    summary = d["summary"]
    assert sum(summary["shares"].values()) == pytest.approx(1.0)
    assert summary["dominant"] in LABELS and 0 < summary["voiced_fraction"] < 1
    assert summary["peak_label"] == "angry"
    low = client.post("/v1/timeline?peak_threshold=0&aggressiveness=3", files={"file": ("rec.wav", _wav(recording))})
    assert low.status_code == 200 and len(low.json()["summary"]["peaks"]) >= 1  # threshold 0: every voiced stretch
    silent = client.post("/v1/timeline", files={"file": ("s.wav", _wav(np.zeros(32000, np.float32)))}).json()
    assert silent["segments"] == [] and silent["summary"]["dominant"] is None


# ------------------------------------------------------------------------------------------------ readiness, reload


class _Wrapped:
    """A predictor that waits in ``predict_proba`` (for timeout and in-flight tests)."""

    def __init__(self, inner, delay: float = 0.0, entered: threading.Event | None = None):
        self._inner, self._delay, self._entered = inner, delay, entered

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def predict_proba(self, audio):
        if self._entered is not None:
            self._entered.set()
        time.sleep(self._delay)
        return self._inner.predict_proba(audio)


def test_timeout_is_504(make_client, holder, clips):
    slow = ModelHolder(holder.model_dir, loader=lambda path, threads: _Wrapped(holder.predictor, delay=1.0))
    slow.reload()
    c = make_client(holder_=slow, request_timeout_s=0.2)
    _assert_error(c.post("/v1/predict", files={"file": ("a.flac", clips["sad"])}), 504, "timeout")
    _assert_error(c.post("/v1/timeline", files={"file": ("a.flac", clips["sad"])}), 504, "timeout")


def test_readyz_503_until_loaded(model_dir, holder, clips):
    gate = threading.Event()

    def gated(path, threads):
        gate.wait(10)
        return holder.predictor

    app = create_app(Settings(model_dir=model_dir), holder=ModelHolder(model_dir, loader=gated))
    with TestClient(app) as c:  # the lifespan starts loading in the background
        _assert_error(c.get("/readyz"), 503, "not_ready")
        _assert_error(c.get("/v1/model"), 503, "not_ready")
        _assert_error(c.post("/v1/predict", files={"file": ("a.flac", clips["sad"])}), 503, "not_ready")
        assert c.get("/healthz").status_code == 200
        gate.set()
        for _ in range(100):
            if c.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        assert c.get("/readyz").status_code == 200
        assert c.post("/v1/predict", files={"file": ("a.flac", clips["sad"])}).status_code == 200


@pytest.fixture
def registry(tmp_path, model_dir) -> Path:
    """A workdir whose registry holds versions 1 and 2 of ser-emotion (same weights), champion 1."""
    from ser import registry as reg

    work = tmp_path / "work"
    reg.add_version(work, model_dir)
    reg.add_version(work, model_dir)
    reg.set_alias(work, "ser-emotion", "champion", 1, "test")
    return work


def test_workdir_without_champion_is_not_ready(tmp_path):
    app = create_app(Settings(workdir=tmp_path / "empty", admin_keys=["adm"]))
    with TestClient(app) as c:
        for _ in range(100):  # the background load fails quickly
            if app.state.holder.last_error:
                break
            time.sleep(0.05)
        err = _assert_error(c.get("/readyz"), 503, "not_ready")
        assert "champion" in err["message"]
        err = _assert_error(c.post("/v1/admin/reload", headers=ADMIN), 409, "reload_failed")
        assert "champion" in err["message"]


def test_admin_reload_follows_the_champion(make_client, registry):
    from ser import registry as reg

    h = ModelHolder(workdir=registry)
    assert h.reload().version == "1"
    c = make_client(holder_=h, model_dir=None, workdir=registry, admin_keys=["adm"])
    reg.set_alias(registry, "ser-emotion", "champion", 2, "test")
    r = c.post("/v1/admin/reload", headers=ADMIN).json()
    assert r["ok"] and r["changed"] and r["version"] == "2" and r["previous_version"] == "1"
    assert c.get("/v1/model").json()["version"] == "2"
    (registry / "registry" / "ser-emotion" / "2" / "model.onnx").write_bytes(b"broken")  # a bad model on disk
    h.reload()  # fingerprint changes, load fails, v2 (already in memory) keeps serving
    err = _assert_error(c.post("/v1/admin/reload", headers=ADMIN), 409, "reload_failed")
    assert err["details"]["version"] == "2" and "cannot load" in err["details"]["error"]
    assert c.get("/readyz").json()["model_version"] == "2"
    assert (
        c.post("/v1/predict", files={"file": ("a.wav", _wav(np.random.default_rng(0).normal(0, 0.1, 16000)))}).json()[
            "model_version"
        ]
        == "2"
    )
    m = _metrics(c)
    assert _value(m["ser_model_reloads"], "ser_model_reloads_total", result="failed") >= 1


def test_in_flight_request_finishes_on_the_old_model(registry, clips):
    from ser import registry as reg
    from ser.inference import Predictor

    entered = threading.Event()

    def loader(path, threads):
        p = Predictor(path, threads=threads)
        return _Wrapped(p, delay=1.0, entered=entered) if p.version == "1" else p

    h = ModelHolder(workdir=registry, loader=loader)
    h.reload()
    with TestClient(create_app(Settings(workdir=registry), holder=h)) as c:
        with ThreadPoolExecutor(1) as pool:
            fut = pool.submit(c.post, "/v1/predict", files={"file": ("a.flac", clips["angry"])})
            assert entered.wait(10)
            reg.set_alias(registry, "ser-emotion", "champion", 2, "test")
            assert h.reload().version == "2"  # swapped while the request is inside v1
            r = fut.result(timeout=30)
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        assert c.post("/v1/predict", files={"file": ("a.flac", clips["angry"])}).json()["model_version"] == "2"


def test_hot_reload_under_concurrent_load(registry, clips):
    """Four client threads predict non-stop while the poller follows champion 1 → 2 → a broken 3 (kept out) and an
    admin reload runs: no request fails, and the served version switches to 2 and stays there."""
    from ser import registry as reg

    h = ModelHolder(workdir=registry)
    h.reload()
    app = create_app(Settings(workdir=registry, reload_poll_s=0.1, inference_workers=2, admin_keys=["adm"]), holder=h)
    results: list[tuple[int, str | None]] = []
    stop = threading.Event()
    lock = threading.Lock()
    names = list(clips)

    with TestClient(app) as c:

        def worker(k: int) -> None:
            i = 0
            while not stop.is_set():
                data = clips[names[(k + i) % len(names)]]
                r = c.post("/v1/predict", files={"file": ("a.flac", data)})
                with lock:
                    results.append((r.status_code, r.json().get("model_version")))
                i += 1

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            reg.set_alias(registry, "ser-emotion", "champion", 2, "promote")
            deadline = time.time() + 20
            while h.predictor.version != "2" and time.time() < deadline:
                time.sleep(0.05)
            assert h.predictor.version == "2"
            assert c.post("/v1/admin/reload", headers=ADMIN).status_code == 200  # an explicit reload mid-load
            broken = reg.add_version(registry, registry / "registry" / "ser-emotion" / "2")
            (broken / "model.onnx").write_bytes(b"not onnx")
            reg.set_alias(registry, "ser-emotion", "champion", 3, "bad promotion")
            deadline = time.time() + 20
            while h.reloads_failed == 0 and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        statuses = [s for s, _ in results]
        versions = [v for _, v in results]
        assert len(results) >= 20 and statuses.count(200) == len(results), set(statuses)
        assert set(versions) == {"1", "2"} and versions[-1] == "2"
        assert h.reloads_failed >= 1 and "cannot load" in h.last_error
        assert c.get("/readyz").json()["model_version"] == "2"
        m = _metrics(c)
        assert _value(m["ser_http_requests"], "ser_http_requests_total", route="/v1/predict", status="200") == len(
            results
        )
        assert _value(m["ser_model_info"], "ser_model_info", version="2") == 1


# ------------------------------------------------------------------------------------------------ metrics, docs


def test_metrics_after_requests(make_client, clips):
    c = make_client()
    for name in ("neutral", "angry", "sad"):
        assert c.post("/v1/predict", files={"file": (name, clips[name])}).status_code == 200
    c.post("/v1/predict", files={"file": ("bad.txt", b"text")})
    c.post("/v1/timeline", files={"file": ("a", clips["happy"])})
    c.get("/does-not-exist")
    m = _metrics(c)
    req = m["ser_http_requests"]
    assert _value(req, "ser_http_requests_total", route="/v1/predict", method="POST", status="200") == 3
    assert _value(req, "ser_http_requests_total", route="/v1/predict", status="422") == 1
    assert _value(req, "ser_http_requests_total", route="/v1/timeline", status="200") == 1
    assert _value(req, "ser_http_requests_total", route="unmatched", status="404") == 1
    assert _value(req, "ser_http_requests_total", status="500") == 0
    lat = m["ser_http_request_duration_seconds"]
    assert _value(lat, "ser_http_request_duration_seconds_count", route="/v1/predict") == 4
    assert _value(m["ser_predictions"], "ser_predictions_total", endpoint="predict") == 3
    assert _value(m["ser_predictions"], "ser_predictions_total", endpoint="timeline") >= 1
    assert _value(m["ser_prediction_confidence"], "ser_prediction_confidence_count") >= 4
    dur = m["ser_audio_duration_seconds"]
    assert _value(dur, "ser_audio_duration_seconds_count", endpoint="predict") == 3
    assert 9 < _value(dur, "ser_audio_duration_seconds_sum", endpoint="predict") < 15  # three ~3.5 s clips
    assert _value(m["ser_model_info"], "ser_model_info", name="ser-emotion", version="1") == 1
    assert _value(m["ser_model_loaded"], "ser_model_loaded") == 1
    fresh = _metrics(make_client())  # a registry per app: a new app starts from zero
    assert _value(fresh["ser_predictions"], "ser_predictions_total") == 0


def test_openapi_documents_every_route(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/v1/predict", "post"),
        ("/v1/predict/batch", "post"),
        ("/v1/timeline", "post"),
        ("/v1/model", "get"),
        ("/v1/admin/reload", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths[path], path
    predict = paths["/v1/predict"]["post"]
    assert {"multipart/form-data", "audio/*"} <= set(predict["requestBody"]["content"])
    assert predict["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("PredictionOut")
    assert {"413", "415", "422", "504"} <= set(predict["responses"])
    timeline = paths["/v1/timeline"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in timeline["anyOf"]] == ["TimelineOut", "TimelineSplitOut"]
    for name in ("PredictionOut", "BatchOut", "TimelineOut", "TimelineSplitOut", "ModelInfo", "ErrorOut", "ReloadOut"):
        assert name in spec["components"]["schemas"]
    assert "APIKeyHeader" in spec["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200


def test_cors(make_client):
    c = make_client(cors_origins=["https://ui.example"])
    r = c.options(
        "/v1/predict",
        headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://ui.example"
    r = c.options("/v1/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


def test_uploads_never_touch_disk(client, clips, monkeypatch):
    """A 3 MB multipart upload (above Starlette's 1 MB spool threshold) is parsed without any temporary file."""
    import tempfile

    def refuse(*a, **k):
        raise AssertionError("an upload was written to a temporary file")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    y = np.random.default_rng(0).normal(0, 0.05, 16000 * 50).astype(np.float32)
    data = _wav(y, subtype="FLOAT")
    assert len(data) > 3_000_000
    r = client.post("/v1/predict", files={"file": ("long.wav", data)})
    assert r.status_code == 200, r.text


def test_parse_multipart_in_memory():
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a b.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        b'RIFF\r\n--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--b--\r\n'
    )
    parts = parse_multipart(body, "multipart/form-data; boundary=b")
    assert [(p.name, p.filename, p.content_type, p.data) for p in parts] == [
        ("file", "a b.wav", "audio/wav", b"RIFF"),
        ("note", None, None, b"hi"),
    ]


def test_settings_from_env(tmp_path):
    s = Settings.from_env(
        {
            "SER_API_KEYS": "a, b",
            "SER_API_KEY": "c",
            "SER_MAX_AUDIO_S": "12.5",
            "SER_CORS_ORIGINS": "https://x",
            "SER_WORKDIR": str(tmp_path),
            "SER_RELOAD_POLL_S": "5",
        },
        max_audio_s=None,
        request_timeout_s=3,
    )
    assert s.api_keys == ["a", "b", "c"] and s.max_audio_s == 12.5 and s.cors_origins == ["https://x"]
    assert s.workdir == tmp_path and s.reload_poll_s == 5 and s.request_timeout_s == 3
    with pytest.raises(ValueError):
        Settings(max_upload_bytes=0)
    with pytest.raises(ValueError, match="not both"):
        Settings(model_dir=tmp_path, workdir=tmp_path)
    explicit = Settings.from_env({"SER_WORKDIR": str(tmp_path)}, model_dir=tmp_path / "m")
    assert explicit.model_dir == tmp_path / "m" and explicit.workdir is None  # --model wins over $SER_WORKDIR


def test_serve_command_builds_the_app(run_cli, model_dir, monkeypatch):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    code, out, err = run_cli("serve", "--model", model_dir, "--port", "8123", "--api-key", "k", "--max-audio-s", "9")
    assert code == 0, err
    assert "1 API key" in out and seen["port"] == 8123 and seen["host"] == "127.0.0.1"
    s = seen["app"].state.settings
    assert s.api_keys == ["k"] and s.max_audio_s == 9 and s.model_dir == model_dir
    code, _, err = run_cli("serve", "--model", model_dir.parent / "nope")
    assert code == 2 and "not a model folder" in err


def test_serving_never_imports_torch(model_dir, clips):
    code = f"""
import sys
from fastapi.testclient import TestClient
import ser.serve.app, ser.timeline, ser.cli.serve_cmds
from ser.serve.app import create_app
from ser.serve.settings import Settings
with TestClient(create_app(Settings(model_dir={str(model_dir)!r}))) as c:
    import time
    for _ in range(200):
        if c.get("/readyz").status_code == 200:
            break
        time.sleep(0.05)
    r = c.post("/v1/timeline", files={{"file": ("a.flac", open({str(model_dir.parent / "clip.flac")!r}, "rb").read())}})
    assert r.status_code == 200, r.text
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""
    (model_dir.parent / "clip.flac").write_bytes(clips["angry"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_reload_keeps_old_model_and_reports(tmp_path, model_dir):
    """ModelHolder directly: a folder replaced by a broken one keeps the loaded predictor; poll_once only acts on a
    change; a fixed folder is picked up."""
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    h = ModelHolder(d)
    first = h.reload()
    assert first.ok and first.changed and h.ready
    old = h.get()
    assert h.poll_once() is None  # nothing changed
    (d / "model.onnx").write_bytes(b"garbage")
    res = h.poll_once()
    assert res is not None and not res.ok and res.version == "1" and h.get() is old
    assert h.poll_once() is None  # the same broken files are not retried every poll
    shutil.copy(model_dir / "model.onnx", d / "model.onnx")
    meta = json.loads((d / "metadata.json").read_text())
    meta["version"] = "5"
    (d / "metadata.json").write_text(json.dumps(meta))
    res = h.poll_once()
    assert res is not None and res.ok and res.version == "5" and res.previous_version == "1"
    assert h.get() is not old and h.status()["reloads_failed"] == 1
    h.start_polling(0.05)
    assert h.status()["polling"]
    h.stop_polling()
    assert not h.status()["polling"]
