"""Speech emotion recognition: retraining on the production corpus and the feedback data, weekly and whenever the
monitoring DAG (``ser_monitoring``) requests it through the asset ``ser_retraining_request``.

The same stage tasks as ``ser_training`` over the production config, then ``decision``, which reports what the
registry did: the new version became ``champion`` or stayed ``challenger``, and why. The ingest stage's cache key
holds a fingerprint of the corpus files, so a week with new feedback clips re-runs ingest and everything after it
(and registers a new version), while a week without reads every stage from the cache and retrains nothing.

The config comes from the run's ``config`` param, else the Airflow Variable ``ser_retraining_config`` (a pipeline
YAML whose ``data.path`` holds the production corpus and the feedback clips, e.g. a ``csv`` corpus listing both);
there is no default: the retraining DAG never trains on the synthetic demo corpus. The workdir (the production
registry) comes from the ``workdir`` param, else the Variable ``ser_retraining_workdir``, else ``$SER_WORKDIR``,
else ``$AIRFLOW_HOME/ser``. See dags/README.md.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG

from ser.pipeline.airflow import (
    CONFIG_VARIABLE,
    DEFAULT_ARGS,
    WORKDIR_VARIABLE,
    add_decision_task,
    add_stage_tasks,
    params,
    retraining_schedule,
)

SOURCES = {"config_variable": CONFIG_VARIABLE, "workdir_variable": WORKDIR_VARIABLE, "require_config": True}

with DAG(
    dag_id="ser_retraining",
    description="Speech emotion recognition: retraining on production + feedback data (weekly and on request)",
    schedule=retraining_schedule("@weekly"),
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # runs share the production workdir and its registry
    default_args=DEFAULT_ARGS,
    params=params(
        config_help=f"pipeline config YAML on the workers (default: the Variable {CONFIG_VARIABLE})",
        workdir_help=f"the production workdir (default: the Variable {WORKDIR_VARIABLE}, else $SER_WORKDIR)",
    ),
    tags=["ser", "retraining"],
    doc_md=__doc__,
) as dag:
    stages = add_stage_tasks(**SOURCES)
    add_decision_task(stages["register"], **SOURCES)
