"""Feedback: validation for the service, the log, the latest-wins join, CSV import, live UAR from feedback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ser.evaluate.metrics import uar_score
from ser.monitor.feedback import (
    FeedbackLog,
    FeedbackRecord,
    InvalidFeedback,
    UnknownPrediction,
    append_feedback,
    import_csv,
    join,
    latest,
    read_feedback,
    validate_feedback,
)
from ser.monitor.ids import new_id
from ser.monitor.log import PredictionLog, RecentIds, append_records, delete_ids, read_log
from tests.monitor.conftest import LABELS, fake_record, model_folder, write_reference

T0 = datetime(2026, 11, 30, 10, 15, tzinfo=UTC)


def test_validation_answers_422_and_404(tmp_path):
    rng = np.random.default_rng(0)
    on_disk = fake_record(rng)
    append_records(tmp_path, [on_disk])
    recent = RecentIds(10)
    fresh = new_id()
    recent.add(fresh)
    with pytest.raises(InvalidFeedback) as bad_id:
        validate_feedback("12345", "sad", LABELS, recent=recent, root=tmp_path)
    assert bad_id.value.status == 422
    with pytest.raises(InvalidFeedback, match="not one of the model's classes") as bad_label:
        validate_feedback(fresh, "bored", LABELS, recent=recent, root=tmp_path)
    assert bad_label.value.status == 422
    with pytest.raises(UnknownPrediction) as unknown:
        validate_feedback(new_id(), "sad", LABELS, recent=recent, root=tmp_path)
    assert unknown.value.status == 404 and unknown.value.code == "unknown_prediction"
    ok = validate_feedback(fresh, "sad", LABELS, recent=recent, root=tmp_path, source="user", group="web")
    assert (ok.prediction_id, ok.label, ok.source, ok.group) == (fresh, "sad", "user", "web")
    assert validate_feedback(on_disk.prediction_id, "sad", LABELS, root=tmp_path).label == "sad"  # found on disk


def test_recent_ids_forget_the_oldest():
    r = RecentIds(3)
    ids = [new_id() for _ in range(5)]
    for i in ids:
        r.add(i)
    assert len(r) == 3 and ids[0] not in r and ids[-1] in r


def test_latest_feedback_wins_in_the_join(tmp_path):
    rng = np.random.default_rng(0)
    recs = [fake_record(rng, ts=T0), fake_record(rng, ts=T0), fake_record(rng, ts=T0)]
    append_records(tmp_path, recs)
    shadow = fake_record(rng, ts=T0, prediction_id=recs[0].prediction_id, role="shadow", version="2")
    append_records(tmp_path, [shadow])
    a, b = recs[0].prediction_id, recs[1].prediction_id
    append_feedback(
        tmp_path,
        [
            FeedbackRecord(a, "sad", T0 + timedelta(minutes=5)),
            FeedbackRecord(a, "angry", T0 + timedelta(minutes=9), source="annotator", group="call-centre"),
            FeedbackRecord(a, "calm", T0 + timedelta(minutes=7)),
            FeedbackRecord(b, "happy", T0 + timedelta(minutes=6)),
        ],
    )
    fb = read_feedback(tmp_path)
    assert latest(fb).num_rows == 2
    j = join(read_log(tmp_path), fb)
    got = sorted(zip(j["prediction_id"].to_pylist(), j["role"].to_pylist(), j["true_label"].to_pylist(), strict=True))
    assert got == sorted([(a, "primary", "angry"), (a, "shadow", "angry"), (b, "primary", "happy")])
    assert set(j["feedback_group"].to_pylist()) == {"call-centre", None}


def test_feedback_log_writes_in_the_background_and_delete_ids_covers_it(tmp_path):
    rng = np.random.default_rng(0)
    with PredictionLog(tmp_path, flush_s=0.05) as plog, FeedbackLog(tmp_path, flush_s=0.05) as flog:
        r = fake_record(rng)
        plog.log(r)
        assert flog.log(validate_feedback(r.prediction_id, "sad", LABELS, recent=plog.recent))
    assert read_feedback(tmp_path).num_rows == 1
    assert delete_ids(tmp_path, [r.prediction_id]) == {"predictions": 1, "feedback": 1}


def test_import_csv_checks_every_row(tmp_path):
    rng = np.random.default_rng(0)
    recs = [fake_record(rng, ts=T0 + timedelta(hours=h)) for h in range(3)]
    append_records(tmp_path, recs)
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "prediction_id,label,group\n"
        f"{recs[0].prediction_id},sad,web\n"
        f"{recs[1].prediction_id},angry,\n"
        f"{recs[2].prediction_id},bored,\n"  # not a class of the model that answered
        f"{new_id()},sad,\n"  # never issued
        "garbage,sad,\n"
    )
    res = import_csv(tmp_path, csv)
    assert (res.read, res.imported) == (5, 2)
    assert [line for line, _ in res.rejected] == [4, 5, 6]
    assert "not one of" in res.rejected[0][1] and "no prediction" in res.rejected[1][1]
    fb = read_feedback(tmp_path)
    assert sorted(fb["label"].to_pylist()) == ["angry", "sad"] and set(fb["source"].to_pylist()) == {"csv"}
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n1,sad\n")
    from ser.errors import SerError

    with pytest.raises(SerError, match="prediction_id"):
        import_csv(tmp_path, bad)


def test_import_accepts_feedback_on_an_answer_without_speech(tmp_path):
    from ser.monitor.log import build_record

    silent = build_record(
        route="/v1/predict", model_name="m", model_version="1", probabilities=[], labels=[], label=None,
        duration_s=3.0, processing_ms=1.0,
    )  # fmt: skip
    append_records(tmp_path, [silent])
    csv = tmp_path / "labels.csv"
    csv.write_text(f"prediction_id,label\n{silent.prediction_id},neutral\n")
    res = import_csv(tmp_path, csv)  # the route accepts it too: the model's classes decide, not the empty answer
    assert (res.read, res.imported) == (1, 1)
    res = import_csv(tmp_path, csv, classes=["angry", "sad"])
    assert res.imported == 0 and "not one of" in res.rejected[0][1]


def test_live_uar_equals_uar_score_of_the_labels(tmp_path):
    from ser.monitor.report import monitor_report

    rng = np.random.default_rng(7)
    model = model_folder(tmp_path / "model", version="3", cv_uar=0.6)
    write_reference(model, rng, n=200)
    log = tmp_path / "log"
    n = 300
    recs = [fake_record(rng, ts=T0 + timedelta(minutes=i), version="3") for i in range(n)]
    truth = [r.label if rng.random() < 0.55 else LABELS[rng.integers(len(LABELS))] for r in recs]
    append_records(log, recs)
    append_feedback(
        log, [FeedbackRecord(r.prediction_id, t, T0 + timedelta(days=1)) for r, t in zip(recs, truth, strict=True)]
    )
    rep = monitor_report(log, model, since=T0, until=T0 + timedelta(days=2), now=T0 + timedelta(days=2))
    (v,) = rep.data["accuracy"]["versions"]
    assert v["n"] == n and v["model_version"] == "3"
    assert v["uar"] == pytest.approx(uar_score(truth, [r.label for r in recs]), abs=1e-12)
    assert v["accuracy"] == pytest.approx(np.mean([t == r.label for t, r in zip(truth, recs, strict=True)]))
    assert v["ci"]["uar"]["low"] <= v["uar"] <= v["ci"]["uar"]["high"]
    for c in v["per_class"]:
        assert c["low"] <= c["recall"] <= c["high"]
    assert v["check"]["status"] in ("ok", "flagged")


def test_a_uuid7_from_past_year_9999_is_unknown_not_malformed():
    """The API schema admits any canonical UUIDv7; one whose time no service can have issued is 404, not 422."""
    from ser.monitor.feedback import InvalidFeedback, UnknownPrediction, check_id

    with pytest.raises(UnknownPrediction, match="past year 9999"):
        check_id("fd4df578-77eb-719d-8ada-2d20b59e0005")
    with pytest.raises(InvalidFeedback):
        check_id("fd4df578-77eb-419d-8ada-2d20b59e0005")  # version 4: malformed
