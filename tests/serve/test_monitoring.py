"""The service side of monitoring on real RAVDESS clips: prediction ids on every answer, the prediction log (no audio,
no file name), feedback (404 / 422 / keys, and the report-time join giving the UAR of the labels), the live metrics
with their model_version labels, drift gauges that move under degraded traffic, and the shadow model (logged under
its own version with the same id, never returned)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ser.audio import decode_bytes, pcm_hash
from ser.monitor.ids import is_valid, new_id
from ser.monitor.log import read_log
from ser.serve.app import create_app
from ser.serve.engine import ModelHolder
from ser.serve.monitoring import log_root
from ser.serve.settings import Settings
from tests.conftest import RAVDESS8, export_tiny_model

pytestmark = pytest.mark.shared_data

SECRET_NAME = "zq-Very-Distinctive-Upload-7731.flac"
EMOTION = {f"{i:02d}": lab for i, lab in enumerate(RAVDESS8, start=1)}  # RAVDESS emotion code → label


def true_label(path: Path) -> str:
    return EMOTION[path.name.split("-")[2]]


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def ravdess_files(ravdess_dir) -> list[Path]:
    files = sorted((ravdess_dir / "Actor_01").glob("*.flac")) + sorted((ravdess_dir / "Actor_02").glob("*.flac"))
    assert len(files) >= 100
    return files


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, ravdess_files) -> Path:
    """A tiny model folder with a training reference built from 60 clean clips of two actors (as export builds
    it)."""
    from ser.inference import Predictor
    from ser.monitor.reference import build_reference, file_stats, write_reference

    d = export_tiny_model(tmp_path_factory.mktemp("mon") / "m", "1", evaluation={"uar": 0.42})
    p = Predictor(d)
    stats, durs, labels, confs, truth = [], [], [], [], []
    for f in ravdess_files[0::2]:  # every other clip of two actors; the tests send the others
        st, dur = file_stats(f, p.pre)
        pred = p.predict_file(f)
        stats.append(st)
        durs.append(dur)
        labels.append(pred.label)
        confs.append(pred.probabilities[pred.label])
        truth.append(true_label(f))
    write_reference(d, build_reference(stats, durs, labels=labels, confidences=confs, true_labels=truth))
    return d


@pytest.fixture(scope="module")
def shadow_dir(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("shadow") / "m", "7")


@pytest.fixture
def clients(model_dir, tmp_path):
    """``make(**settings)`` → a started TestClient logging under ``tmp_path/log`` (closed afterwards)."""
    opened: list[TestClient] = []

    def make(holder: ModelHolder | None = None, **kw) -> TestClient:
        kw.setdefault("model_dir", model_dir)
        kw.setdefault("prediction_log", str(tmp_path / "log" / "predictions"))
        h = holder or ModelHolder(model_dir)
        if holder is None:
            assert h.reload().ok
        c = TestClient(create_app(Settings(**kw), holder=h))
        c.__enter__()
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def monitor(c: TestClient):
    return c.app.state.monitor


def flushed_log(c: TestClient):
    m = monitor(c)
    m.flush()
    return read_log(m.root)


def metrics(c: TestClient) -> list:
    return [s for fam in text_string_to_metric_families(c.get("/metrics").text) for s in fam.samples]


def value(samples, name: str, **labels) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def wav(y: np.ndarray, sr: int = 16_000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def assert_error(r, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == code


# ------------------------------------------------------------------------------------------------ ids and the log


def test_log_location_defaults(tmp_path):
    assert log_root(Settings(model_dir=tmp_path)) is None  # a model folder: off unless asked
    assert log_root(Settings(workdir=tmp_path)) == str(tmp_path / "monitor")
    assert log_root(Settings(workdir=tmp_path, prediction_log="off")) is None
    assert log_root(Settings(model_dir=tmp_path, prediction_log="/monitor/predictions")) == "/monitor"
    assert log_root(Settings(prediction_log="/var/lib/ser-log")) == "/var/lib/ser-log"
    assert log_root(Settings(prediction_log="s3://bucket/ser/predictions")) == "s3://bucket/ser"
    assert Settings.from_env({"SER_PREDICTION_LOG": "off"}).prediction_log == "off"


def test_prediction_gets_an_id_and_a_record_without_audio_or_file_name(clients, ravdess_files):
    c = clients()
    data = ravdess_files[3].read_bytes()
    r = c.post("/v1/predict", files={"file": (SECRET_NAME, data)})
    assert r.status_code == 200, r.text
    out = r.json()
    assert is_valid(out["prediction_id"])
    t = flushed_log(c)
    assert t.num_rows == 1
    row = t.to_pylist()[0]
    assert row["prediction_id"] == out["prediction_id"]
    assert (row["route"], row["role"], row["model_name"], row["model_version"]) == (
        "/v1/predict",
        "primary",
        "ser-emotion",
        "1",
    )
    assert row["label"] == out["label"] and row["confidence"] == pytest.approx(out["confidence"])
    assert row["labels"] == RAVDESS8
    assert row["probabilities"] == pytest.approx([out["probabilities"][k] for k in RAVDESS8], abs=1e-6)
    assert row["duration_s"] == pytest.approx(out["duration_s"], abs=1e-3)
    assert row["processing_ms"] == pytest.approx(out["processing_ms"], abs=1e-3)
    assert row["pcm_sha256"] == pcm_hash(decode_bytes(data))
    info = sf.info(io.BytesIO(data))
    assert (row["native_sr"], row["channels"], row["container"]) == (info.samplerate, info.channels, "FLAC")
    for name in ("rms_dbfs", "peak_dbfs", "speech_fraction", "snr_db", "high_band_share", "clipped_fraction"):
        assert row[name] is not None and np.isfinite(row[name]), name
    assert len(row["mel_mean"]) == 64 and len(row["mel_std"]) == 64
    assert row["client_name_hash"] and len(row["client_name_hash"]) == 32
    # never the file name (any column, any case, the raw bytes of every file); never audio (no long array)
    needles = [SECRET_NAME, SECRET_NAME.lower(), "Very-Distinctive", "7731"]
    for col in t.column_names:
        text = json.dumps(t[col].to_pylist(), default=str)
        assert not any(n in text for n in needles), col
        if col not in ("mel_mean", "mel_std", "probabilities", "labels"):
            continue
        assert max(len(v or []) for v in t[col].to_pylist()) <= 64
    files = [f for f in Path(monitor(c).root).rglob("*") if f.is_file()]
    assert files
    for f in files:
        raw = f.read_bytes()
        assert not any(n.encode() in raw for n in needles), f
        assert len(raw) < 40_000  # a 3.5 s clip is 112 KB of 16-bit PCM: the log holds none of it


def test_no_speech_answer_gets_an_id_and_a_null_label(clients):
    c = clients()
    r = c.post("/v1/predict", files={"file": ("s.wav", wav(np.zeros(48_000, np.float32)))})
    assert r.status_code == 200 and r.json()["speech"] is False
    pid = r.json()["prediction_id"]
    row = flushed_log(c).to_pylist()[0]
    assert row["prediction_id"] == pid and row["label"] is None and row["confidence"] is None
    assert row["speech_fraction"] == 0.0


def test_batch_items_timeline_segments_and_stream_finals_get_ids(clients, ravdess_files):
    c = clients()
    files = [("files", (f.name, f.read_bytes())) for f in ravdess_files[:3]] + [("files", ("bad.txt", b"text"))]
    b = c.post("/v1/predict/batch", files=files).json()
    batch_ids = [i["result"]["prediction_id"] for i in b["results"] if i["ok"]]
    assert len(batch_ids) == 3 and all(map(is_valid, batch_ids)) and len(set(batch_ids)) == 3
    assert [i["result"] for i in b["results"] if not i["ok"]] == [None]
    call = np.concatenate([decode_bytes(f.read_bytes()) for f in ravdess_files[:4]])
    tl = c.post("/v1/timeline", files={"file": ("call.wav", wav(call))}).json()
    seg_ids = [s["prediction_id"] for s in tl["segments"]]
    assert len(seg_ids) >= 3 and all(map(is_valid, seg_ids)) and len(set(seg_ids)) == len(seg_ids)
    y = decode_bytes(ravdess_files[5].read_bytes())
    pcm = (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()
    with c.websocket_connect("/v1/stream") as ws:
        ws.send_text('{"type": "start", "sample_rate": 16000}')
        assert ws.receive_json()["type"] == "ready"
        for i in range(0, len(pcm), 640 * 10):
            ws.send_bytes(pcm[i : i + 640 * 10])
        ws.send_text('{"type": "end"}')
        msgs = []
        while not msgs or msgs[-1]["type"] != "done":
            msgs.append(ws.receive_json())
    finals = [m for m in msgs if m["type"] == "final"]
    assert finals and all(is_valid(m["prediction_id"]) for m in finals)
    t = flushed_log(c)
    by_route = {}
    for row in t.to_pylist():
        by_route.setdefault(row["route"], []).append(row["prediction_id"])
    assert sorted(by_route["/v1/predict/batch"]) == sorted(batch_ids)
    assert sorted(by_route["/v1/timeline"]) == sorted(seg_ids)
    assert sorted(by_route["/v1/stream"]) == sorted(m["prediction_id"] for m in finals)


def test_log_is_flushed_at_shutdown_and_can_be_off(model_dir, ravdess_files, tmp_path):
    h = ModelHolder(model_dir)
    h.reload()
    root = tmp_path / "log"
    s = Settings(model_dir=model_dir, prediction_log=str(root), prediction_log_flush_s=300)
    with TestClient(create_app(s, holder=h)) as c:
        pid = c.post("/v1/predict", files={"file": ("a.flac", ravdess_files[0].read_bytes())}).json()["prediction_id"]
    assert read_log(root)["prediction_id"].to_pylist() == [pid]  # the lifespan's close wrote it
    with TestClient(create_app(Settings(model_dir=model_dir), holder=h)) as c:
        assert monitor(c).root is None and monitor(c).log is None
        r = c.post("/v1/predict", files={"file": ("a.flac", ravdess_files[0].read_bytes())})
        assert is_valid(r.json()["prediction_id"])  # ids without a log too


# ------------------------------------------------------------------------------------------------ feedback


def test_feedback_errors(clients, ravdess_files):
    c = clients()
    pid = c.post("/v1/predict", files={"file": ("a.flac", ravdess_files[0].read_bytes())}).json()["prediction_id"]
    assert_error(c.post("/v1/feedback", json={"prediction_id": new_id(), "label": "sad"}), 404, "unknown_prediction")
    assert_error(c.post("/v1/feedback", json={"prediction_id": pid, "label": "bored"}), 422, "invalid_feedback")
    assert_error(c.post("/v1/feedback", json={"prediction_id": "nope", "label": "sad"}), 422, "invalid_request")
    assert_error(c.post("/v1/feedback", json={"prediction_id": pid.upper(), "label": "sad"}), 422, "invalid_request")
    unknown = {"prediction_id": new_id(), "label": "bored"}  # never issued: 404 whatever the label
    assert_error(c.post("/v1/feedback", json=unknown), 404, "unknown_prediction")
    assert_error(c.post("/v1/feedback", json={"label": "sad"}), 422, "invalid_request")
    assert_error(c.post("/v1/feedback", json=[1, 2]), 422, "invalid_request")
    assert_error(c.post("/v1/feedback", content=b"{not json", headers={"content-type": "application/json"}), 422,
                 "invalid_request")  # fmt: skip
    assert_error(c.post("/v1/feedback", json={"prediction_id": pid, "label": "sad", "x": 1}), 422, "invalid_request")
    r = c.post("/v1/feedback", content=json.dumps({"prediction_id": pid, "label": "sad"}),
               headers={"content-type": "text/plain"})  # fmt: skip
    assert_error(r, 415, "unsupported_media_type")
    big = json.dumps({"prediction_id": pid, "label": "sad", "source": "x" * 20_000})
    assert_error(c.post("/v1/feedback", content=big, headers={"content-type": "application/json"}), 413, "too_large")
    ok = c.post("/v1/feedback", json={"prediction_id": pid, "label": "sad", "source": "user"})
    assert ok.status_code == 202, ok.text
    body = ok.json()
    assert body["prediction_id"] == pid and body["label"] == "sad" and body["source"] == "user" and body["stored"]


def test_feedback_needs_the_key_when_keys_are_set(clients, ravdess_files):
    c = clients(api_keys=["ci:k1"])
    key = {"X-API-Key": "k1"}
    data = ravdess_files[0].read_bytes()
    pid = c.post("/v1/predict", files={"file": ("a.flac", data)}, headers=key).json()["prediction_id"]
    assert_error(c.post("/v1/feedback", json={"prediction_id": pid, "label": "sad"}), 401, "unauthorized")
    r = c.post("/v1/feedback", json={"prediction_id": pid, "label": "sad"}, headers={"X-API-Key": "wrong"})
    assert_error(r, 401, "unauthorized")
    assert c.post("/v1/feedback", json={"prediction_id": pid, "label": "sad"}, headers=key).status_code == 202


def test_feedback_for_an_earlier_process_is_found_on_disk(clients, ravdess_files):
    c1 = clients()
    pid = c1.post("/v1/predict", files={"file": ("a.flac", ravdess_files[0].read_bytes())}).json()["prediction_id"]
    monitor(c1).flush()
    c2 = clients()  # a new process: its recent ids do not hold pid, the log on disk does
    assert pid not in monitor(c2).recent
    assert c2.post("/v1/feedback", json={"prediction_id": pid, "label": "calm"}).status_code == 202


def test_feedback_join_gives_the_uar_of_the_labels(clients, ravdess_files):
    from ser.evaluate.metrics import uar_score
    from ser.monitor.feedback import join, read_feedback

    c = clients()
    files = ravdess_files[:24]
    answers = {}
    for f in files:
        r = c.post("/v1/predict", files={"file": (f.name, f.read_bytes())}).json()
        answers[r["prediction_id"]] = (true_label(f), r["label"])
    # feedback before the predictions are flushed: accepted (issued by this process), joined at report time
    for pid, (truth, _) in answers.items():
        fb = {"prediction_id": pid, "label": truth, "source": "annotator"}
        assert c.post("/v1/feedback", json=fb).status_code == 202
    monitor(c).flush()
    root = monitor(c).root
    joined = join(read_log(root), read_feedback(root))
    assert joined.num_rows == len(files)
    got = uar_score(joined["true_label"].to_pylist(), joined["label"].to_pylist())
    want = uar_score([t for t, _ in answers.values()], [p for _, p in answers.values()])
    assert got == pytest.approx(want)
    monitor(c).live.recompute()
    m = metrics(c)
    assert value(m, "ser_live_uar", model_version="1") == pytest.approx(want)
    assert value(m, "ser_live_feedback", model_version="1") == len(files)


# ------------------------------------------------------------------------------------------------ live metrics


def test_metrics_carry_model_version_and_the_new_series(clients, ravdess_files):
    c = clients(max_streams=7)
    for f in ravdess_files[:3]:
        assert c.post("/v1/predict", files={"file": (f.name, f.read_bytes())}).status_code == 200
    monitor(c).live.recompute()
    m = metrics(c)
    assert value(m, "ser_predictions_total", endpoint="predict", model_version="1") == 3
    assert value(m, "ser_prediction_confidence_count", model_version="1") == 3
    assert value(m, "ser_stream_capacity") == 7
    assert value(m, "ser_model_expected_uar", model_version="1") == pytest.approx(0.42)
    assert value(m, "ser_drift_window_size", model_version="1") == 3
    assert {s.labels["statistic"] for s in m if s.name == "ser_drift_psi"} == {
        "rms_dbfs",
        "peak_dbfs",
        "snr_db",
        "speech_fraction",
        "clipped_fraction",
        "highband_share",
        "confidence",
        "label_mix",
    }
    assert value(m, "ser_drift_flagged", model_version="1") == 0  # 3 answers: too few to flag
    for name in ("ser_input_speech_fraction", "ser_input_clipped_fraction", "ser_input_snr_db", "ser_input_level_dbfs"):
        assert value(m, name + "_count") == 3, name
    assert value(m, "ser_prediction_log_dropped_total") == 0
    names = {s.name for s in m}
    assert "ser_shadow_predictions_total" not in names or value(m, "ser_shadow_predictions_total") == 0


def test_no_reference_no_drift_gauges(clients, shadow_dir, ravdess_files, caplog):
    h = ModelHolder(shadow_dir)
    h.reload()
    with caplog.at_level("INFO", logger="ser.monitor"):
        c = clients(holder=h, model_dir=shadow_dir)
    assert any("no reference" in r.getMessage() for r in caplog.records)
    c.post("/v1/predict", files={"file": ("a.flac", ravdess_files[0].read_bytes())})
    monitor(c).live.recompute()
    names = {s.name for s in metrics(c)}
    assert not names & {"ser_drift_psi", "ser_drift_flagged", "ser_drift_window_size"}
    assert "ser_input_snr_db_count" in names


def test_drift_gauges_move_under_degraded_traffic(clients, ravdess_files):
    from ser.degrade import apply

    c = clients(drift_window=40)

    def send(clips: list[np.ndarray]) -> None:
        for i in range(0, len(clips), 10):
            files = [("files", (f"{j}.wav", wav(y))) for j, y in enumerate(clips[i : i + 10])]
            assert c.post("/v1/predict/batch", files=files).json()["n_ok"] == len(files[:10])

    def drift() -> dict:
        monitor(c).live.recompute()
        m = metrics(c)
        psi = {s.labels["statistic"]: s.value for s in m if s.name == "ser_drift_psi"}
        return {"psi": psi, "flagged": value(m, "ser_drift_flagged", model_version="1")}

    clean = [decode_bytes(f.read_bytes()) for f in ravdess_files[1::2][:40]]  # not the reference's clips
    send(clean)
    before = drift()
    degraded = [apply(y, 16_000, "telephone+noise:generated-white@5", seed) for seed, y in enumerate(clean)]
    send(degraded)  # the window (40) now holds only degraded answers
    after = drift()
    # clean speech of other clips: PSI of small samples is biased up (about 0.4 here), but nothing is flagged
    assert before["flagged"] == 0, before
    assert after["flagged"] >= 2, after  # narrow band, low SNR, ...
    for stat in ("highband_share", "snr_db", "speech_fraction"):
        assert after["psi"][stat] > 3.0 and after["psi"][stat] > 3 * before["psi"][stat], (stat, before, after)


# ------------------------------------------------------------------------------------------------ shadow


def _strip(out: dict) -> dict:
    return {k: v for k, v in out.items() if k not in ("prediction_id", "processing_ms")}


def test_shadow_answers_are_logged_under_their_version_and_never_returned(clients, shadow_dir, ravdess_files):
    plain = clients(prediction_log="off")
    shadowed = clients(shadow_ref=str(shadow_dir))
    mon = monitor(shadowed)
    mon.shadow.holder.reload()  # the background load, made certain
    files = ravdess_files[:5]
    ids = []
    for f in files:
        a = plain.post("/v1/predict", files={"file": (f.name, f.read_bytes())}).json()
        b = shadowed.post("/v1/predict", files={"file": (f.name, f.read_bytes())}).json()
        assert _strip(a) == _strip(b)  # identical but for the id and the timing
        assert b["model_version"] == "1" and "shadow" not in json.dumps(b)
        ids.append(b["prediction_id"])
    batch = shadowed.post("/v1/predict/batch", files=[("files", (f.name, f.read_bytes())) for f in files[:2]]).json()
    assert batch["model_version"] == "1"
    ids += [i["result"]["prediction_id"] for i in batch["results"]]
    t = flushed_log(shadowed).to_pylist()
    primary = {r["prediction_id"]: r for r in t if r["role"] == "primary"}
    shadow = {r["prediction_id"]: r for r in t if r["role"] == "shadow"}
    assert set(primary) == set(ids) == set(shadow)
    for pid, r in shadow.items():
        assert r["model_version"] == "7" and primary[pid]["model_version"] == "1"
        assert r["label"] is not None and r["route"] == primary[pid]["route"]
        assert r["rms_dbfs"] == primary[pid]["rms_dbfs"]  # the same input's statistics
    m = metrics(shadowed)
    assert value(m, "ser_shadow_predictions_total", model_version="7") == len(ids)
    agree = sum(shadow[p]["label"] == primary[p]["label"] for p in ids)
    assert value(m, "ser_shadow_predictions_total", model_version="7", agree="true") == agree
    assert value(m, "ser_predictions_total", model_version="7") == 0  # the shadow is not an answer


def test_shadow_share_zero_runs_nothing_and_a_registry_ref_resolves(clients, model_dir, shadow_dir, tmp_path):
    from ser.serve.settings import SecondModel

    c = clients(shadow_ref=str(shadow_dir), shadow_share=0.0)
    assert monitor(c).shadow.block == SecondModel(ref=str(shadow_dir), share=0.0, mode="shadow")
    assert not monitor(c).shadow.sampled()
    wd = tmp_path / "wd"
    reg = wd / "registry" / "ser-emotion"
    shutil.copytree(shadow_dir, reg / "7")
    (reg / "aliases.json").write_text(json.dumps({"challenger": 7}))
    s = Settings(workdir=wd, shadow_ref="challenger", prediction_log="off")
    assert s.second_model() == SecondModel(ref="challenger")
    from ser.serve.monitoring import ServiceMonitor

    holder = ServiceMonitor(s, ModelHolder(model_dir), create_app(s).state.metrics).second_holder(s.second_model())
    assert holder.source_dir() == reg / "7"
