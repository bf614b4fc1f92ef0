"""The closed loop's pass (:mod:`ser.jobs.loop`): triggered by a flagged report and by enough new feedback, not by
neither; the same feedback never triggers twice (state file); a failed pipeline keeps the watermark; every pass
is in the events file; the loop config's errors; ``ser loop run`` end to end on the synthetic corpus (slow)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from ser.errors import ConfigError
from ser.jobs.loop import LoopCheck, LoopJob, load_loop_config, parse_loop_config, read_events, triggers
from ser.monitor.feedback import FeedbackRecord, append_feedback
from ser.monitor.log import append_records
from tests.monitor.conftest import fake_record, fake_stats, model_folder, write_reference

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = model_folder(tmp_path_factory.mktemp("m") / "model", version="1", cv_uar=0.6)
    write_reference(path, np.random.default_rng(0), n=500)
    return path


def log_traffic(root: Path, n: int = 400, shift: float = 0.0, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    t0 = NOW - timedelta(hours=12)
    recs = [
        fake_record(rng, ts=t0 + timedelta(seconds=60 * i), stats=fake_stats(rng, 8, shift=shift)) for i in range(n)
    ]
    append_records(root, recs)
    return recs


def feedback(root: Path, recs: list, at: datetime) -> None:
    append_feedback(root, [FeedbackRecord(r.prediction_id, r.label, ts=at) for r in recs])  # right answers


class FakeRetrain:
    """Stands in for ``ser.pipeline.retrain``: records its calls, answers a register result (or a failure)."""

    def __init__(self, ok: bool = True, register: str = "ran"):
        self.calls: list[tuple[str | None, Path]] = []
        self.ok, self.register = ok, register

    def __call__(self, config, workdir):
        self.calls.append((config, workdir))
        if not self.ok:
            return {"ok": False, "stages": [{"stage": "ingest", "status": "failed", "error": "corpus gone"}]}
        result = {"name": "ser-emotion", "version": 2, "alias": "challenger", "reason": "UAR 0.5 < 0.6", "uar": 0.5}
        return {"ok": True, "stages": [{"stage": "register", "status": self.register}], "result": result}


def config(tmp_path: Path, model: Path, **kw):
    block = {"workdir": str(tmp_path / "wd"), "log": str(tmp_path / "log"), "model": str(model), "since": "24h",
             "pipeline": str(tmp_path / "pipeline.yaml"), **kw}  # fmt: skip
    return parse_loop_config({"loop": block})


def test_no_trigger_without_drift_or_feedback(tmp_path, model):
    log_traffic(tmp_path / "log")
    cfg = config(tmp_path, model, min_new_feedback=50)
    fake = FakeRetrain()
    out = LoopJob(cfg, fake, now=NOW).run()
    assert not out.check.triggered and out.check.reasons == []
    assert out.check.monitor["predictions"] == 400 and out.check.monitor["flagged"] is False
    assert fake.calls == [] and not out.retrained
    assert Path(out.check.monitor["report"]).is_file()  # the pass's report.html
    [event] = read_events(cfg.events_path)
    assert event["triggered"] is False and event["retrained"] is False and event["monitor"]["predictions"] == 400
    assert not cfg.state_path.exists()  # nothing consumed


def test_drift_triggers_the_pipeline_and_records_the_decision(tmp_path, model):
    log_traffic(tmp_path / "log", shift=-20.0)  # 20 dB quieter than the training reference
    cfg = config(tmp_path, model, min_new_feedback=0)
    fake = FakeRetrain()
    out = LoopJob(cfg, fake, now=NOW).run()
    assert out.check.triggered and out.check.reasons[0].startswith("monitoring report flagged: data drift")
    assert fake.calls == [(cfg.pipeline, Path(cfg.workdir))]
    assert out.retrained and out.ok
    assert out.decision["version"] == 2 and out.decision["alias"] == "challenger" and out.decision["new"] is True
    [event] = read_events(cfg.events_path)
    assert event["decision"]["reason"] == "UAR 0.5 < 0.6" and event["pipeline"]["ok"] is True
    # drift off: the same report no longer triggers
    assert LoopJob(config(tmp_path, model, min_new_feedback=0, on_drift=False), fake, now=NOW).check().reasons == []


def test_new_feedback_triggers_once(tmp_path, model):
    root = tmp_path / "log"
    recs = log_traffic(root)
    cfg = config(tmp_path, model, min_new_feedback=100)
    feedback(root, recs[:99], NOW - timedelta(hours=1))
    fake = FakeRetrain()
    assert not LoopJob(cfg, fake, now=NOW).run().check.triggered  # 99 < 100
    feedback(root, recs[99:150], NOW - timedelta(minutes=30))
    first = LoopJob(cfg, fake, now=NOW).run()
    assert first.check.new_feedback == 150 and first.retrained
    assert first.check.reasons == ["150 new labelled answers since the last retrain (threshold 100)"]
    state = json.loads(cfg.state_path.read_text())
    assert state["feedback_watermark"] == NOW.isoformat(timespec="seconds")
    # the next pass: the same feedback is not new any more
    later = NOW + timedelta(hours=1)
    again = LoopJob(cfg, fake, now=later).run()
    assert again.check.new_feedback == 0 and not again.check.triggered and len(fake.calls) == 1
    # feedback that arrives after the retrain counts again (a second label of an old id included)
    feedback(root, recs[:120], later)
    third = LoopJob(cfg, fake, now=later + timedelta(minutes=1)).run()
    assert third.check.new_feedback == 120 and third.retrained and len(fake.calls) == 2
    assert [e["retrained"] for e in read_events(cfg.events_path)] == [False, True, False, True]
    # one report folder per pass, the latest kept
    assert len(list(cfg.reports_dir.iterdir())) == 3  # the first two passes share their time (NOW)
    LoopJob(cfg.model_copy(update={"keep_reports": 1}), fake, now=later + timedelta(minutes=2)).check()
    assert [p.name for p in cfg.reports_dir.iterdir()] == ["20261201T130200Z"]


def test_a_failed_pipeline_is_recorded_and_keeps_the_watermark(tmp_path, model):
    root = tmp_path / "log"
    recs = log_traffic(root)
    feedback(root, recs[:20], NOW - timedelta(hours=1))
    cfg = config(tmp_path, model, min_new_feedback=10)
    out = LoopJob(cfg, FakeRetrain(ok=False), now=NOW).run()
    assert out.retrained and out.error == "stage ingest failed: corpus gone" and out.decision is None
    assert not cfg.state_path.exists()  # the next pass tries again
    assert LoopJob(cfg, FakeRetrain(), now=NOW + timedelta(hours=1)).run().check.new_feedback == 20


def test_no_model_yet_trains_the_first_one(tmp_path):
    cfg = parse_loop_config({"loop": {"workdir": str(tmp_path / "wd"), "pipeline": "p.yaml"}}, base=tmp_path)
    assert cfg.pipeline == str(tmp_path / "p.yaml") and cfg.log_root == str(tmp_path / "wd" / "monitor")
    check = LoopJob(cfg, now=NOW).check()
    assert check.monitor["error"] and check.reasons[0].startswith("no model to monitor")
    assert LoopCheck.from_dict(json.loads(json.dumps(check.to_dict()))) == check


def test_triggered_without_a_pipeline_config_is_an_error_event(tmp_path, model):
    log_traffic(tmp_path / "log", shift=-20.0)
    cfg = config(tmp_path, model, pipeline=None)
    out = LoopJob(cfg, FakeRetrain(), now=NOW).run()
    assert out.error and "loop.pipeline" in out.error and read_events(cfg.events_path)[0]["error"] == out.error


def test_triggers_rule():
    cfg = parse_loop_config({"loop": {"workdir": "w", "min_new_feedback": 5}})
    ok = {"flagged": False, "reasons": []}
    assert triggers(ok, 4, cfg) == []
    assert triggers(ok, 5, cfg) == ["5 new labelled answers since the last retrain (threshold 5)"]
    assert triggers({"flagged": True, "reasons": ["a", "b"]}, 0, cfg) == ["monitoring report flagged: a; b"]
    off = parse_loop_config({"loop": {"workdir": "w", "min_new_feedback": 0, "on_drift": False}})
    assert triggers({"flagged": True, "reasons": ["a"]}, 10_000, off) == []


def test_loop_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="loop config not found"):
        load_loop_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"workdir": "w"}))
    with pytest.raises(ConfigError, match="expected a 'loop:' mapping"):
        load_loop_config(bad)
    bad.write_text(yaml.safe_dump({"loop": {"workdir": "w", "min_new_feedback": -1}}))
    with pytest.raises(ConfigError, match=r"loop\.min_new_feedback"):
        load_loop_config(bad)
    bad.write_text(yaml.safe_dump({"loop": {"workdir": "w", "since": "yesterday"}}))
    with pytest.raises(ConfigError, match=r"loop\.since"):
        load_loop_config(bad)
    bad.write_text(yaml.safe_dump({"loop": {"workdir": "w", "drift": {"psi": "high"}}}))
    with pytest.raises(ConfigError, match=r"loop\.drift\.psi"):
        load_loop_config(bad)


@pytest.mark.slow
def test_ser_loop_run_trains_the_first_model_then_reads_the_cache(tmp_path, capsys):
    """``ser loop run`` with the real pipeline (the synthetic corpus, a few epochs): the first pass finds no
    champion and trains v1 (champion by the register stage's gate); the second monitors v1 and, with nothing
    flagged and no feedback, retrains nothing."""
    from ser.cli import main

    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        yaml.safe_dump(
            {
                "data": {"synth_speakers": 8, "synth_per_emotion": 2},
                "split": {"k": 2},
                "train": {"overrides": {"train": {"epochs": 2}}},
                "evaluate": {"n_boot": 50},
                "register": {"max_group_gap": None},
                "tracking": {"enabled": False},
            }
        )
    )
    loop = tmp_path / "loop.yaml"
    loop.write_text(yaml.safe_dump({"loop": {"workdir": "wd", "pipeline": "pipeline.yaml", "min_new_feedback": 10}}))
    with pytest.raises(SystemExit) as exc:
        main(["loop", "run", "--config", str(loop), "--json"])
    assert exc.value.code == 0
    first = json.loads(capsys.readouterr().out)
    assert first["reasons"][0].startswith("no model to monitor") and first["retrained"]
    assert first["decision"]["version"] == 1 and first["decision"]["alias"] == "champion" and first["decision"]["new"]
    with pytest.raises(SystemExit) as exc:
        main(["loop", "run", "--config", str(loop)])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "0 predictions" in out and "no trigger: nothing retrained" in out
    events = read_events(tmp_path / "wd" / "loop" / "events.jsonl")
    assert [e["retrained"] for e in events] == [True, False]
    with pytest.raises(SystemExit) as exc:
        main(["loop", "events", "--config", str(loop)])
    assert "v1 → champion" in capsys.readouterr().out
