"""The pipeline's stages as Airflow 3 tasks: what ``dags/ser_training.py`` and ``dags/ser_retraining.py`` build on.

One task per stage of :data:`ser.pipeline.stages.STAGES`, wired with the same dependencies; each runs
``ser.pipeline.run(load_config(config), workdir, only=[stage])``, so it reads its upstream stages' records from
``WORKDIR/stages`` and is cached like a local run: a DAG run with nothing changed only reads records, and new corpus
files (the ingest key holds a fingerprint of them) re-run ingest and what follows.

Airflow is imported inside the functions that build tasks, never at module import: the service and the main test
suite import ``ser`` without Airflow installed.

Where a task finds its config and workdir: the DAG run's ``params`` (``config``, ``workdir``; set with ``--conf`` or
the trigger form), else, where the DAG names them, Airflow Variables (the retraining DAG:
``ser_retraining_config``, ``ser_retraining_workdir``), else the defaults: no config is the embedded synthetic demo
corpus (the training DAG) or an error (the retraining DAG), and the workdir is ``$SER_WORKDIR``, else
``$AIRFLOW_HOME/ser``. The workdir must be a path that every worker sees (a shared volume); ``data.path`` in the
config may be a ``gs://`` / ``s3://`` URI.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONFIG_VARIABLE = "ser_retraining_config"
WORKDIR_VARIABLE = "ser_retraining_workdir"
DECISION_TASK = "decision"
STATUS_KEY = "status"
"""XCom key under which each stage task pushes ``ran`` or ``cached`` (its return value is the stage's metric)."""

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "ser",
    "retries": 1,
    "retry_delay": timedelta(minutes=2),
}
"""Task defaults of both DAGs. A pipeline error (bad config, validation thresholds crossed, upstream not done for
this config) fails the task at once: retrying cannot help. Anything else (a lost worker, I/O) is retried once."""


def default_workdir() -> str:
    """``$SER_WORKDIR``, else ``$AIRFLOW_HOME/ser`` (``~/airflow/ser``)."""
    if os.environ.get("SER_WORKDIR"):
        return os.environ["SER_WORKDIR"]
    return str(Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser() / "ser")


def stage_dependencies() -> dict[str, tuple[str, ...]]:
    """``{stage: its upstream stages}`` in dependency order, read from :data:`~ser.pipeline.stages.STAGES`."""
    from ser.pipeline.runner import topological
    from ser.pipeline.stages import STAGES

    return {s.name: tuple(s.deps) for s in topological(STAGES)}


def params(*, config: str | None = None, workdir: str | None = None, config_help: str = "", workdir_help: str = ""):
    """The DAG's ``params``: ``config`` (a pipeline YAML path or none) and ``workdir``."""
    from airflow.sdk import Param

    return {
        "config": Param(
            config,
            type=["null", "string"],
            description=config_help or "pipeline config YAML on the workers (none: the synthetic demo corpus)",
        ),
        "workdir": Param(
            workdir,
            type=["null", "string"],
            description=workdir_help or "where stages, the registry and MLflow live: a path every worker sees",
        ),
    }


def resolve(
    run_params: dict[str, Any],
    *,
    config_variable: str | None = None,
    workdir_variable: str | None = None,
    require_config: bool = False,
) -> tuple[str | None, str]:
    """``(config path or None, workdir)`` of a task: params, else the Variables, else the defaults."""
    from airflow.sdk import Variable

    from ser.errors import ConfigError
    from ser.uri import is_remote, local_path

    config = run_params.get("config") or None
    if config is None and config_variable:
        config = Variable.get(config_variable, default=None) or None
    if config is None and require_config:
        raise ConfigError(
            f"no pipeline config: set the Airflow Variable {config_variable!r} or trigger with conf "
            '{"config": "/path/to/pipeline.yaml"}'
        )
    workdir = run_params.get("workdir") or None
    if workdir is None and workdir_variable:
        workdir = Variable.get(workdir_variable, default=None) or None
    workdir = workdir or default_workdir()
    if is_remote(workdir):
        raise ConfigError(
            f"workdir {workdir!r}: must be a path every worker sees (a shared volume or a bucket mounted with a FUSE "
            "driver), not a URI; data.path in the config may be a gs:// / s3:// URI"
        )
    return (str(local_path(config)) if config else None), str(local_path(workdir))


def _fail(exc: BaseException | str):
    """An exception that fails the task without retrying."""
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(str(exc))


def _resolve_in_task(context: Any, where: dict[str, Any]) -> tuple[str | None, str]:
    """:func:`resolve` for a running task (``where``: its keyword arguments); a problem fails the task at once."""
    try:
        return resolve(context["params"], **where)
    except Exception as exc:
        raise _fail(exc) from exc


def run_stage(stage: str, config: str | None, workdir: str):
    """Run one stage whose upstream stages are done (cached when its record exists); its :class:`StageResult`.

    A pipeline error (:class:`~ser.errors.SerError`) raises ``AirflowFailException`` (no retry); any other
    exception propagates (retried)."""
    from ser.errors import SerError
    from ser.pipeline import load_config, run

    try:
        summary = run(load_config(config), workdir, only=[stage])
    except SerError as exc:
        raise _fail(exc) from exc
    result = summary.results[0]
    if result.status == "failed":
        raise _fail(f"stage {stage} failed: {result.error} (details: {Path(workdir) / 'logs' / 'pipeline.jsonl'})")
    log.info("stage %s: %s in %.1f s (key %s): %s", stage, result.status, result.seconds, result.key, result.metric)
    return result


def stage_record(stage: str, config: str | None, workdir: str) -> dict[str, Any] | None:
    """The record of ``stage`` for this config in ``workdir`` (None when it has not run), without running it."""
    from ser.pipeline import load_config
    from ser.pipeline.runner import read_record, stage_keys
    from ser.pipeline.stages import STAGES

    key = stage_keys(STAGES, load_config(config))[stage]
    return read_record(Path(workdir) / "stages" / stage / key)


def add_stage_tasks(
    *,
    config_variable: str | None = None,
    workdir_variable: str | None = None,
    require_config: bool = False,
) -> dict[str, Any]:
    """Add one task per stage to the DAG being defined (inside ``with DAG(...)``), wired like STAGES; returns
    ``{stage: task}``. Each task returns the stage's metric (a short string) and pushes ``ran`` / ``cached``
    under the XCom key ``status``."""
    from airflow.sdk import get_current_context, task

    where = {"config_variable": config_variable, "workdir_variable": workdir_variable, "require_config": require_config}

    def make(stage: str, deps: tuple[str, ...]):
        @task(task_id=stage, doc_md=f"Pipeline stage `{stage}` (upstream: {', '.join(deps) or 'none'}).")
        def run_one() -> str:
            context = get_current_context()
            config, workdir = _resolve_in_task(context, where)
            result = run_stage(stage, config, workdir)
            context["ti"].xcom_push(key=STATUS_KEY, value=result.status)
            return result.metric

        return run_one()

    tasks: dict[str, Any] = {}
    for stage, deps in stage_dependencies().items():
        tasks[stage] = make(stage, deps)
        for d in deps:
            tasks[d] >> tasks[stage]
    return tasks


def add_decision_task(
    upstream: Any,
    *,
    config_variable: str | None = None,
    workdir_variable: str | None = None,
    require_config: bool = False,
) -> Any:
    """A task after ``upstream`` (the register task) that reports the registry decision: the registered version,
    ``champion`` or ``challenger``, the reason, the UAR, and whether it was registered by this run (``new``) or
    read from the cache (nothing changed since)."""
    from airflow.sdk import get_current_context, task

    where = {"config_variable": config_variable, "workdir_variable": workdir_variable, "require_config": require_config}

    @task(task_id=DECISION_TASK, doc_md="The registry decision: champion or challenger, and why.")
    def decision() -> dict[str, Any]:
        from ser import registry

        context = get_current_context()
        config, workdir = _resolve_in_task(context, where)
        try:
            rec = stage_record("register", config, workdir)
        except Exception as exc:
            raise _fail(exc) from exc
        if rec is None:
            raise _fail(f"no register record for this config in {workdir} (did the corpus change during the run?)")
        result = dict(rec.get("result") or {})
        status = context["ti"].xcom_pull(task_ids="register", key=STATUS_KEY)
        result["new"] = status == "ran"
        result["aliases"] = registry.read_aliases(workdir, result["name"])
        if result["new"]:
            summary = f"{result['name']} v{result['version']} registered as {result['alias']}: {result['reason']}"
        else:
            summary = (
                f"no new data or config: nothing retrained; {result['name']} aliases {result['aliases']} "
                f"(v{result['version']} was {result['alias']}: {result['reason']})"
            )
        result["summary"] = summary
        log.info("registry decision: %s", summary)
        return result

    out = decision()
    upstream >> out
    return out


# ----------------------------------------------------------------------------------------------------------------
# the monitoring DAG: the closed loop's check, and an asset event that schedules ser_retraining

LOOP_CONFIG_VARIABLE = "ser_loop_config"
RETRAIN_REQUEST = "ser_retraining_request"
"""Name of the Airflow asset the monitoring DAG emits when retraining is due; ``ser_retraining`` is scheduled on
it (and weekly)."""
MONITOR_TASK, GATE_TASK, REQUEST_TASK = "monitor", "drift_or_feedback", "request_retraining"


def retrain_request() -> Any:
    """The asset that requests a retraining (:data:`RETRAIN_REQUEST`)."""
    from airflow.sdk import Asset

    return Asset(name=RETRAIN_REQUEST, group="ser")


def retraining_schedule(cron: str = "@weekly") -> Any:
    """``ser_retraining``'s schedule: every time the monitoring DAG requests it, and on ``cron`` (UTC)."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=retrain_request())


def loop_config_of(context: Any) -> Any:
    """The :class:`~ser.jobs.loop.LoopConfig` of a running task: the run's ``loop_config`` param, else the Variable
    :data:`LOOP_CONFIG_VARIABLE`; missing or bad fails the task at once."""
    from airflow.sdk import Variable

    from ser.jobs.loop import load_loop_config

    path = context["params"].get("loop_config") or Variable.get(LOOP_CONFIG_VARIABLE, default=None)
    if not path:
        raise _fail(
            f"no loop config: set the Airflow Variable {LOOP_CONFIG_VARIABLE!r} or trigger with conf "
            '{"loop_config": "/path/to/loop.yaml"}'
        )
    try:
        return load_loop_config(path)
    except Exception as exc:
        raise _fail(exc) from exc


def add_monitoring_tasks() -> dict[str, Any]:
    """``monitor`` → ``drift_or_feedback`` (short-circuit) → ``request_retraining`` (outlet: the
    :func:`retrain_request` asset). ``monitor`` runs the loop's check (:meth:`ser.jobs.loop.LoopJob.check`: the
    monitoring report of the window and the new feedback) and returns it; a pass without a trigger is recorded in
    the loop's events file there. When it triggered, ``request_retraining`` records the pass (events, the feedback
    watermark) and succeeds, which emits the asset event (its ``extra``: the reasons); otherwise it is skipped and
    no event is emitted."""
    from airflow.sdk import get_current_context, task

    from ser.jobs.loop import LoopCheck, LoopJob

    asset = retrain_request()

    @task(task_id=MONITOR_TASK, doc_md="The monitoring report of the window, and the feedback since the last retrain.")
    def monitor() -> dict[str, Any]:
        cfg = loop_config_of(get_current_context())
        try:
            check = LoopJob(cfg).check()
        except Exception as exc:
            raise _fail(exc) from exc
        if not check.triggered:
            LoopJob(cfg).request(check, "")
        log.info("monitor: %s", " | ".join(check.reasons) or "no trigger")
        return check.to_dict()

    @task.short_circuit(task_id=GATE_TASK, doc_md="Goes on only when drift was flagged or enough feedback arrived.")
    def gate(check: dict[str, Any]) -> bool:
        return bool(check["triggered"])

    @task(task_id=REQUEST_TASK, outlets=[asset], doc_md=f"Records the pass and emits the asset `{RETRAIN_REQUEST}`.")
    def request(check: dict[str, Any]) -> dict[str, Any]:
        context = get_current_context()
        cfg = loop_config_of(context)
        outcome = LoopJob(cfg).request(LoopCheck.from_dict(check), RETRAIN_REQUEST)
        context["outlet_events"][asset].extra = {"reasons": check["reasons"], "started": check["started"]}
        log.info("retraining requested: %s (recorded in %s)", " | ".join(check["reasons"]), outcome.events_path)
        return {"requested": RETRAIN_REQUEST, "reasons": check["reasons"]}

    checked = monitor()
    gated = gate(checked)
    requested = request(checked)
    gated >> requested
    return {MONITOR_TASK: checked, GATE_TASK: gated, REQUEST_TASK: requested}
