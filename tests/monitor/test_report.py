"""The monitoring report on synthetic logs (drift / no drift, quality, prediction drift, shadow rows, no
reference), its files, and the ``ser monitor`` / ``ser feedback`` commands."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ser.monitor.feedback import FeedbackRecord, append_feedback
from ser.monitor.log import append_records, read_log
from ser.monitor.reference import load_reference
from ser.monitor.report import flagged_names, monitor_report
from tests.monitor.conftest import LABELS, fake_probs, fake_record, fake_stats, model_folder, write_reference

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = model_folder(tmp_path_factory.mktemp("m") / "model", version="1", cv_uar=0.6)
    write_reference(path, np.random.default_rng(0), n=500)
    return path


def live_log(root, n=600, seed=1, version="1", **stats_kw):
    rng = np.random.default_rng(seed)
    recs = [
        fake_record(rng, ts=T0 + timedelta(seconds=60 * i), version=version, stats=fake_stats(rng, 8, **stats_kw))
        for i in range(n)
    ]
    append_records(root, recs)
    return recs


def test_same_distribution_is_not_flagged_and_files_are_written(tmp_path, model):
    live_log(tmp_path / "log")
    rep = monitor_report(tmp_path / "log", model, out_dir=tmp_path / "out", now=NOW)
    assert not rep.flagged and rep.reasons == [], rep.reasons
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["flagged"] is False and data["log"]["predictions"] == 600
    assert data["model"]["reference"]["clips"] == 500
    names = {r["name"] for r in data["data_drift"]["statistics"]}
    assert names == {"duration_s", "rms_dbfs", "peak_dbfs", "clipped_fraction", "speech_fraction", "snr_db",
                     "high_band_share"}  # fmt: skip
    assert len(data["data_drift"]["bands"]["mel_mean"]["psi"]) == 8
    assert data["prediction_drift"]["rows"] == 600 and data["prediction_drift"]["model_version"] == "1"
    html = (tmp_path / "out" / "report.html").read_text()
    assert "No threshold crossed" in html and html.count("data:image/png;base64,") >= 4
    assert set(rep.plots) >= {"drift_psi", "bands", "label_mix", "confidence"}


def test_level_drop_is_flagged_on_the_levels(tmp_path, model):
    live_log(tmp_path / "log", shift=-20.0)
    rep = monitor_report(tmp_path / "log", model, out_dir=tmp_path / "out", now=NOW)
    assert rep.flagged
    names = flagged_names(rep.data)
    assert {"rms_dbfs", "peak_dbfs", "mel_mean"} <= names
    assert "snr_db" not in names and "high_band_share" not in names
    assert "Thresholds crossed" in (tmp_path / "out" / "report.html").read_text()
    assert "flagged_bins" in rep.plots


def test_quality_shares_and_category_mix(tmp_path, model):
    live_log(tmp_path / "log", high_band_share=0.0, native_sr=8000)
    rep = monitor_report(tmp_path / "log", model, now=NOW)
    names = flagged_names(rep.data)
    assert {"high_band_share", "native_sr", "quality:narrow_band"} <= names
    quality = {r["name"]: r for r in rep.data["quality"]}
    assert quality["narrow_band"]["live_share"] == 1.0 and quality["narrow_band"]["reference_share"] == 0.0
    assert not quality["silence"]["flagged"]


def test_prediction_drift_uses_the_reference_version_and_ignores_shadow_rows(tmp_path, model):
    rng = np.random.default_rng(5)
    root = tmp_path / "log"
    live_log(root, n=400, seed=2)
    biased = []
    for i in range(400):  # a shadow model that says "angry" every time: not the served answers
        p = np.full(len(LABELS), 0.01)
        p[LABELS.index("angry")] = 1 - 0.01 * (len(LABELS) - 1)
        biased.append(
            fake_record(rng, ts=T0 + timedelta(seconds=60 * i + 1), version="2", role="shadow", probabilities=p)
        )
    append_records(root, biased)
    rep = monitor_report(root, model, now=NOW)
    assert rep.data["log"]["roles"] == {"primary": 400, "shadow": 400}
    assert not rep.flagged, rep.reasons
    assert rep.data["data_drift"]["rows"] == 400
    angry = []  # the served model itself turns to "angry"
    for i in range(400):
        p = fake_probs(rng)
        p[:] = 0.02
        p[LABELS.index("angry")] = 1 - 0.02 * (len(LABELS) - 1)
        angry.append(fake_record(rng, ts=T0 + timedelta(hours=8, seconds=60 * i), probabilities=p))
    append_records(root, angry)
    rep = monitor_report(root, model, since=T0 + timedelta(hours=8), now=NOW)
    assert {"prediction:label", "prediction:confidence"} <= flagged_names(rep.data)


def test_live_accuracy_drop_is_flagged_per_version_and_group(tmp_path, model):
    rng = np.random.default_rng(3)
    root = tmp_path / "log"
    recs = live_log(root, n=300, seed=3)
    wrong = [LABELS[(LABELS.index(r.label) + 1) % len(LABELS)] for r in recs]  # every answer wrong
    fb = [
        FeedbackRecord(r.prediction_id, w, NOW, group="web" if i % 2 else "phone")
        for i, (r, w) in enumerate(zip(recs, wrong, strict=True))
    ]
    append_feedback(root, fb)
    rep = monitor_report(root, model, now=NOW + timedelta(hours=1))
    (v,) = rep.data["accuracy"]["versions"]
    assert v["uar"] == 0.0 and v["check"]["flagged"] and set(v["groups"]) == {"phone", "web"}
    assert any(r.startswith("live accuracy") for r in rep.reasons)
    _ = rng


def test_no_reference_no_drift(tmp_path):
    model = model_folder(tmp_path / "old-model")
    assert load_reference(model) is None
    live_log(tmp_path / "log", n=50)
    rep = monitor_report(tmp_path / "log", model, out_dir=tmp_path / "out", now=NOW)
    assert rep.data["data_drift"] is None and not rep.flagged
    assert "no reference.parquet" in rep.data["notes"][0]
    assert "No drift computed" in (tmp_path / "out" / "report.html").read_text()


def test_window_bounds(tmp_path, model):
    live_log(tmp_path / "log", n=120)  # one per minute from T0 for two hours
    rep = monitor_report(tmp_path / "log", model, since="2026-11-30T10:30:00Z", until="2026-11-30T11:00:00Z", now=NOW)
    assert rep.data["log"]["predictions"] == 30
    rep = monitor_report(tmp_path / "log", model, since="90m", now=T0 + timedelta(hours=2))
    assert rep.data["log"]["predictions"] == 90


# ----------------------------------------------------------------------------------------------------------------
# the command line


def test_cli_report_exit_codes(tmp_path, model, run_cli):
    live_log(tmp_path / "ok")
    code, out, err = run_cli("monitor", "report", "--log", tmp_path / "ok", "--model", model, "--out", tmp_path / "r1")
    assert code == 0, err
    assert "report:" in out and (tmp_path / "r1" / "report.html").is_file()
    live_log(tmp_path / "bad", shift=-20.0)
    code, out, err = run_cli(
        "monitor", "report", "--log", tmp_path / "bad", "--model", model, "--out", tmp_path / "r2", "--json"
    )
    assert code == 1 and "threshold crossed: data drift: rms_dbfs" in err
    assert json.loads(out)["flagged"] is True
    cfg = tmp_path / "loose.yaml"
    cfg.write_text("min_live: 100000\n")  # a window this small is not judged
    code, _, err = run_cli(
        "monitor", "report", "--log", tmp_path / "bad", "--model", model, "--out", tmp_path / "r3", "--config", cfg
    )
    assert code == 0, err
    code, _, err = run_cli("monitor", "report", "--log", tmp_path / "ok", "--model", tmp_path, "--out", tmp_path / "r4")
    assert code == 2 and "not a model folder" in err


def test_cli_report_resolves_a_registry_reference(tmp_path, model, run_cli):
    import shutil

    from ser import registry

    folder = shutil.copytree(model, tmp_path / "export")
    (folder / "model.onnx").write_bytes(b"")  # the registry lists folders with a graph; the report never loads it
    registry.add_version(tmp_path / "wd", folder, "ser-emotion")
    registry.set_alias(tmp_path / "wd", "ser-emotion", "champion", 1, "test")
    live_log(tmp_path / "log", n=60)
    code, _, err = run_cli(
        "monitor", "report", "--log", tmp_path / "log", "--model", "ser-emotion@champion", "--workdir", tmp_path / "wd",
        "--out", tmp_path / "r",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "report.json").read_text())["model"]["reference"]["clips"] == 500


def test_cli_purge_delete_and_feedback_import(tmp_path, run_cli):
    recs = live_log(tmp_path, n=60)
    code, out, _ = run_cli("monitor", "delete", "--log", tmp_path, recs[0].prediction_id, recs[1].prediction_id)
    assert code == 0 and "deleted 2 prediction row(s)" in out
    csv = tmp_path / "labels.csv"
    csv.write_text("prediction_id,label\n" + "".join(f"{r.prediction_id},sad\n" for r in recs[2:12]))
    code, out, _ = run_cli("feedback", "import", csv, "--log", tmp_path)
    assert code == 0 and "10 imported, 0 rejected" in out
    csv.write_text(f"prediction_id,label\n{recs[0].prediction_id},sad\n")  # deleted above: unknown now
    code, out, _ = run_cli("feedback", "import", csv, "--log", tmp_path, "--json")
    assert code == 1 and json.loads(out)["rejected"] == 1 and json.loads(out)["reasons"][0]["line"] == 2
    code, out, _ = run_cli("monitor", "purge", "--log", tmp_path, "--older-than-days", "0", "--json")
    assert code == 0 and json.loads(out)["predictions"]["hours_deleted"] >= 1
    assert read_log(tmp_path).num_rows == 0
    code, _, err = run_cli("monitor", "delete", "--log", tmp_path, "not-an-id")
    assert code == 2 and "not a prediction id" in err
