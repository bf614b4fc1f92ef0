"""The Airflow 3 DAGs in dags/: every file imports (DagBag) with one task per pipeline stage wired like STAGES, the
training DAG runs end to end with ``dag.test()`` on the synthetic demo corpus (registered champion with ONNX and
card), the retraining DAG then reads every stage from the cache (config and workdir from Airflow Variables) and
reports the registry decision, and on new corpus data re-runs every stage and registers v2; the monitoring DAG
emits the retraining asset when drift is flagged and not when it is not; a pipeline error fails its task at once
(no retry).

Runs in its own environment (``scripts/airflow_ci.sh`` builds ``.venv-airflow``): Airflow's pins are not the
service's. AIRFLOW_HOME and the SQLite metadata DB live in a tmp folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"
PIPELINE_DAG_IDS = {"ser_training", "ser_retraining"}
DAG_IDS = {*PIPELINE_DAG_IDS, "ser_monitoring"}

# a small run of the synthetic demo corpus (written as a RAVDESS-layout folder, so that a test can add a clip to it):
# TINY of tests/test_pipeline.py with 4 training epochs (these tests check the orchestration, not the model; the
# first registered version is champion whatever its UAR)
TINY = {
    "split": {"k": 2},
    "train": {"overrides": {"train": {"epochs": 4}}},
    "evaluate": {"n_boot": 200},
    "register": {"max_group_gap": None},
}


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> Path:
    """A fresh AIRFLOW_HOME with a migrated SQLite DB; set before anything imports airflow."""
    assert "airflow" not in sys.modules, "airflow was imported before AIRFLOW_HOME was set"
    home = tmp_path_factory.mktemp("airflow_home")
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        }
    )
    os.environ.pop("SER_WORKDIR", None)
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return home


@pytest.fixture(scope="module")
def dagbag(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS), safe_mode=False)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    from ser.data.synth import synthesize

    folder = tmp_path_factory.mktemp("config")
    corpus = synthesize(folder / "corpus", n_speakers=8, per_emotion=3)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"data": {"corpus": "ravdess", "path": str(corpus)}, **TINY}))
    return path


def _task_states(dr) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dr.dag_id, TaskInstance.run_id == dr.run_id)
        ).all()
        return {ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state) for ti in tis}


def _xcoms(dr, key: str = "return_value") -> dict[str, object]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=dr.run_id, dag_ids=dr.dag_id, key=key)).all()
        return {x.task_id: XComModel.deserialize_value(x) for x in rows}


def _events(workdir: Path) -> list[dict]:
    log = workdir / "logs" / "pipeline.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def _state(dr) -> str:
    return str(dr.state.value if hasattr(dr.state, "value") else dr.state)


# ----------------------------------------------------------------------------------------------------------------
# structure


def test_shared_module_imports_without_airflow():
    code = "import sys, ser.pipeline.airflow; assert 'airflow' not in sys.modules, 'airflow imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_dag_imports_with_one_task_per_stage(dagbag):
    from ser.pipeline.stages import STAGE_NAMES, STAGES

    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == DAG_IDS
    deps = {s.name: set(s.deps) for s in STAGES}
    for dag_id in PIPELINE_DAG_IDS:
        dag = dagbag.dags[dag_id]
        extra = {"decision"} if dag_id == "ser_retraining" else set()
        assert set(dag.task_ids) == set(STAGE_NAMES) | extra, dag_id
        for stage in STAGE_NAMES:
            task = dag.get_task(stage)
            assert set(task.upstream_task_ids) == deps[stage], (dag_id, stage)
            assert task.retries == 1
        assert not dag.catchup and dag.max_active_runs == 1
        assert set(dag.params) == {"config", "workdir"}
    training, retraining = dagbag.dags["ser_training"], dagbag.dags["ser_retraining"]
    assert training.schedule is None and training.params["config"] is None
    # weekly, and whenever the monitoring DAG emits the retraining asset
    assert type(retraining.timetable).__name__ == "AssetOrTimeSchedule"
    assert retraining.timetable.timetable.expression == "0 0 * * 0"
    assert retraining.timetable.asset_condition.name == "ser_retraining_request"
    assert retraining.get_task("decision").upstream_task_ids == {"register"}
    assert not retraining.get_task("decision").downstream_task_ids


def test_new_corpus_files_change_the_ingest_key_and_every_key_after_it(tmp_path):
    """The retraining DAG's premise: a new feedback clip re-runs ingest and what follows; unchanged data is cached."""
    import shutil

    from ser.data.synth import synthesize
    from ser.pipeline import parse_config
    from ser.pipeline.runner import stage_keys
    from ser.pipeline.stages import STAGE_NAMES, STAGES

    root = synthesize(tmp_path / "corpus", n_speakers=2, per_emotion=1)
    cfg = parse_config({"data": {"corpus": "ravdess", "path": str(root)}})
    before = stage_keys(STAGES, cfg)
    assert stage_keys(STAGES, cfg) == before
    clip = next(p for p in sorted(root.rglob("*")) if p.is_file())
    shutil.copy2(clip, clip.with_name(f"feedback-{clip.name}"))
    after = stage_keys(STAGES, cfg)
    assert [s for s in STAGE_NAMES if after[s] != before[s]] == STAGE_NAMES


# ----------------------------------------------------------------------------------------------------------------
# runs


@pytest.fixture(scope="module")
def trained(dagbag, tiny_config, tmp_path_factory):
    """One ``dag.test()`` run of the training DAG on the synthetic demo corpus into a fresh workdir."""
    workdir = tmp_path_factory.mktemp("ser_workdir")
    t0 = time.perf_counter()
    dr = dagbag.dags["ser_training"].test(run_conf={"config": str(tiny_config), "workdir": str(workdir)})
    print(f"ser_training dag.test(): {time.perf_counter() - t0:.1f} s")
    return dr, workdir


def test_training_dag_end_to_end(trained):
    from ser import registry
    from ser.pipeline.stages import STAGE_NAMES

    dr, workdir = trained
    assert _task_states(dr) == dict.fromkeys(STAGE_NAMES, "success")
    assert _state(dr) == "success"
    # each task returned its stage's metric and ran it (nothing was cached in a fresh workdir)
    metrics = _xcoms(dr)
    assert set(metrics) == set(STAGE_NAMES)
    for stage in STAGE_NAMES:
        rec = json.loads(next((workdir / "stages" / stage).glob("*/stage.json")).read_text())
        assert metrics[stage] == rec["metric"] and metrics[stage], stage
    assert _xcoms(dr, "status") == dict.fromkeys(STAGE_NAMES, "ran")
    ended = [e["stage"] for e in _events(workdir) if e["event"] == "stage_end"]
    assert ended == STAGE_NAMES
    # the registered champion is complete
    assert registry.read_aliases(workdir) == {"champion": 1}
    folder = registry.resolve(workdir, "ser-emotion@champion")
    assert {"model.onnx", "MODEL_CARD.md", "metadata.json"} <= {p.name for p in folder.iterdir()}
    assert metrics["register"].startswith("v1 → champion")


def test_retraining_dag_reads_the_cache_and_reports_the_decision(trained, dagbag, tiny_config, tmp_path):
    from ser.pipeline.stages import STAGE_NAMES

    _, workdir = trained
    before = len(_events(workdir))
    variables = tmp_path / "variables.json"  # the production way: config and workdir in Airflow Variables
    variables.write_text(
        json.dumps({"ser_retraining_config": str(tiny_config), "ser_retraining_workdir": str(workdir)})
    )
    t0 = time.perf_counter()
    dr = dagbag.dags["ser_retraining"].test(variable_file_path=str(variables))
    seconds = time.perf_counter() - t0
    print(f"ser_retraining dag.test() (cached): {seconds:.1f} s")
    assert _task_states(dr) == dict.fromkeys([*STAGE_NAMES, "decision"], "success")
    assert _state(dr) == "success"
    new = _events(workdir)[before:]
    assert [e["stage"] for e in new if e["event"] == "stage_cached"] == STAGE_NAMES
    assert not [e for e in new if e["event"] in ("stage_start", "stage_end")]
    assert _xcoms(dr, "status") == dict.fromkeys(STAGE_NAMES, "cached")
    decision = _xcoms(dr)["decision"]
    assert decision["alias"] == "champion" and decision["version"] == 1 and decision["reason"]
    assert decision["new"] is False and decision["aliases"] == {"champion": 1}
    assert "nothing retrained" in decision["summary"]


def test_a_pipeline_error_fails_the_task_without_retry(dagbag, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"threads": 0}}))
    t0 = time.perf_counter()
    dr = dagbag.dags["ser_training"].test(run_conf={"config": str(bad), "workdir": str(tmp_path / "wd")})
    states = _task_states(dr)
    assert _state(dr) == "failed"
    assert states["ingest"] == "failed"  # not up_for_retry: a bad config does not get better
    assert {states[s] for s in states if s != "ingest"} == {"upstream_failed"}
    assert time.perf_counter() - t0 < 60


def test_retraining_dag_on_new_data_runs_every_stage_and_registers_v2(trained, dagbag, tiny_config, tmp_path):
    """New clips in the corpus (the feedback clips landing between runs) re-run every stage; the register stage's
    gate decides what v2 becomes. (dag.test() does not follow the monitoring DAG's asset event: this is the run
    that event schedules.)"""
    import soundfile as sf

    from ser import registry
    from ser.pipeline.stages import STAGE_NAMES

    _, workdir = trained
    config = yaml.safe_load(tiny_config.read_text())
    corpus = Path(config["data"]["path"])
    config["train"]["overrides"]["train"]["epochs"] = 1  # the orchestration is checked, not the model: keep it short
    config["evaluate"]["n_boot"] = 50
    short = tmp_path / "pipeline.yaml"
    short.write_text(yaml.safe_dump(config))
    for emotion in ("03", "05"):  # two "feedback" clips of a known speaker: strong intensity, statement 2, take 2
        clip = corpus / "Actor_01" / f"03-01-{emotion}-01-01-01-01.wav"
        new = clip.with_name(f"03-01-{emotion}-02-02-02-01.wav")
        assert clip.is_file() and not new.exists()
        y, sr = sf.read(clip)
        sf.write(new, 0.8 * y, sr)  # new content (a copy would be a duplicate hash)
    variables = tmp_path / "variables.json"
    variables.write_text(json.dumps({"ser_retraining_config": str(short), "ser_retraining_workdir": str(workdir)}))
    t0 = time.perf_counter()
    dr = dagbag.dags["ser_retraining"].test(variable_file_path=str(variables))
    print(f"ser_retraining dag.test() (new data): {time.perf_counter() - t0:.1f} s")
    assert _state(dr) == "success", _task_states(dr)
    assert _xcoms(dr, "status") == dict.fromkeys(STAGE_NAMES, "ran")
    decision = _xcoms(dr)["decision"]
    assert decision["new"] is True and decision["version"] == 2 and decision["reason"]
    assert decision["alias"] in ("champion", "challenger")
    assert registry.read_aliases(workdir)[decision["alias"]] == 2
    assert registry.versions(workdir) == [1, 2]


# ----------------------------------------------------------------------------------------------------------------
# the monitoring DAG


def test_monitoring_dag_structure(dagbag):
    dag = dagbag.dags["ser_monitoring"]
    assert set(dag.task_ids) == {"monitor", "drift_or_feedback", "request_retraining"}
    assert dag.get_task("request_retraining").upstream_task_ids == {"monitor", "drift_or_feedback"}
    assert [o.name for o in dag.get_task("request_retraining").outlets] == ["ser_retraining_request"]
    assert dag.schedule == "@hourly" and not dag.catchup and dag.max_active_runs == 1
    assert set(dag.params) == {"loop_config"}


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    """A model folder with a training reference and a loop config factory: ``make(shift)`` writes a prediction
    log whose levels are ``shift`` dB off the reference and a loop config over it (drift only, no feedback
    trigger)."""
    import numpy as np

    sys.path.insert(0, str(ROOT))  # the synthetic log helpers of the main test suite
    from ser.monitor.log import append_records
    from tests.monitor.conftest import fake_record, fake_stats, model_folder, write_reference

    base = tmp_path_factory.mktemp("monitored")
    model = model_folder(base / "model")
    write_reference(model, np.random.default_rng(0), n=400)

    def make(name: str, shift: float) -> Path:
        from datetime import UTC, datetime, timedelta

        rng = np.random.default_rng(1)
        t0 = datetime.now(UTC) - timedelta(hours=3)
        recs = [fake_record(rng, ts=t0 + timedelta(seconds=20 * i), stats=fake_stats(rng, 8, shift=shift))
                for i in range(300)]  # fmt: skip
        append_records(base / name / "log", recs)
        block = {"workdir": str(base / name / "wd"), "log": str(base / name / "log"), "model": str(model),
                 "since": "24h", "min_new_feedback": 0}  # fmt: skip
        path = base / name / "loop.yaml"
        path.write_text(yaml.safe_dump({"loop": block}))
        return path

    return make


def _asset_events(dr) -> list:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent).where(AssetEvent.source_dag_id == dr.dag_id, AssetEvent.source_run_id == dr.run_id)
        ).all()
        return [(e.asset.name, dict(e.extra or {})) for e in rows]


def test_monitoring_dag_requests_retraining_when_drift_is_flagged(dagbag, monitored):
    from ser.jobs.loop import load_loop_config, read_events

    loop = monitored("drifted", shift=-20.0)
    dr = dagbag.dags["ser_monitoring"].test(run_conf={"loop_config": str(loop)})
    assert _task_states(dr) == dict.fromkeys(["monitor", "drift_or_feedback", "request_retraining"], "success")
    check = _xcoms(dr)["monitor"]
    assert check["triggered"] and check["reasons"][0].startswith("monitoring report flagged: data drift")
    [(name, extra)] = _asset_events(dr)
    assert name == "ser_retraining_request" and extra["reasons"] == check["reasons"]
    [event] = read_events(load_loop_config(loop).events_path)
    assert event["requested"] == "ser_retraining_request" and event["triggered"]


def test_monitoring_dag_does_not_request_retraining_without_drift(dagbag, monitored):
    from ser.jobs.loop import load_loop_config, read_events

    loop = monitored("steady", shift=0.0)
    dr = dagbag.dags["ser_monitoring"].test(run_conf={"loop_config": str(loop)})
    states = _task_states(dr)
    assert states["monitor"] == "success" and states["drift_or_feedback"] == "success"
    assert states["request_retraining"] == "skipped"
    assert _state(dr) == "success"
    assert _xcoms(dr)["monitor"]["triggered"] is False
    assert _asset_events(dr) == []
    [event] = read_events(load_loop_config(loop).events_path)
    assert event["triggered"] is False and "requested" not in event


def test_monitoring_dag_without_a_loop_config_fails_at_once(dagbag):
    # loop_config given as null: the DagBag's DAG object keeps the params of its last dag.test(run_conf=...)
    dr = dagbag.dags["ser_monitoring"].test(run_conf={"loop_config": None})
    states = _task_states(dr)
    assert states["monitor"] == "failed" and _state(dr) == "failed"  # failed, not up for retry
    assert {states[t] for t in ("drift_or_feedback", "request_retraining")} == {"upstream_failed"}
