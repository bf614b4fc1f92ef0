"""Speech emotion recognition: the training pipeline as an Airflow 3 DAG, triggered by hand or by API.

One task per stage of ``ser.pipeline.stages.STAGES`` (ingest → validate → split → features → tune → train →
evaluate → export → card → register), with the same dependencies; each task runs
``ser.pipeline.run(load_config(config), workdir, only=[stage])`` and returns the stage's metric. Stages are cached
in the workdir like a local ``ser pipeline run``: re-triggering with the same config only reads their records.

Params: ``config`` (a pipeline YAML on the workers; none: the synthetic demo corpus) and ``workdir`` (default
``$SER_WORKDIR``, else ``$AIRFLOW_HOME/ser``). See dags/README.md.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG

from ser.pipeline.airflow import DEFAULT_ARGS, add_stage_tasks, default_workdir, params

with DAG(
    dag_id="ser_training",
    description="Speech emotion recognition: corpus → validated data → model → ONNX + card → registry",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # runs on one workdir share its stage folders and registry
    default_args=DEFAULT_ARGS,
    params=params(workdir=default_workdir()),
    tags=["ser", "training"],
    doc_md=__doc__,
) as dag:
    add_stage_tasks()
