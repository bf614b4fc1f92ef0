"""The Airflow 3 DAGs in dags/: every file imports (DagBag) with one task per pipeline stage wired like STAGES, the
training DAG runs end to end with ``dag.test()`` on the synthetic demo corpus (registered champion with ONNX and
card), the retraining DAG then reads every stage from the cache (config and workdir from Airflow Variables) and
reports the registry decision, and a pipeline error fails its task at once (no retry).

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
DAG_IDS = {"ser_training", "ser_retraining"}

# a small run of the synthetic demo corpus: TINY of tests/test_pipeline.py with 4 training epochs (these tests check
# the orchestration, not the model; the first registered version is champion whatever its UAR)
TINY = {
    "data": {"synth_speakers": 8, "synth_per_emotion": 3},
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
    path = tmp_path_factory.mktemp("config") / "pipeline.yaml"
    path.write_text(yaml.safe_dump(TINY))
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
    for dag_id in DAG_IDS:
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
    assert retraining.schedule == "@weekly"
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
