"""Speech emotion recognition: hourly monitoring of the served model, and retraining when it is due.

``monitor`` runs the closed loop's check (``ser.jobs.loop.LoopJob.check``, as ``ser loop run`` does): the
monitoring report of the last window of the prediction log against the monitored model's training reference, and
the feedback that arrived since the last retrain. When the report is flagged (drift, input quality, live accuracy)
or at least ``loop.min_new_feedback`` new labelled answers arrived, ``request_retraining`` records the pass and
emits the Airflow asset ``ser_retraining_request``, on which ``ser_retraining`` is scheduled (beside its weekly
run); otherwise ``drift_or_feedback`` short-circuits and nothing is emitted. Every pass is appended to the loop's
events file.

The loop config (a YAML with a ``loop:`` block: workdir, log, model, since, drift, min_new_feedback) comes from
the run's ``loop_config`` param, else the Airflow Variable ``ser_loop_config``. See dags/README.md.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, Param

from ser.pipeline.airflow import DEFAULT_ARGS, LOOP_CONFIG_VARIABLE, add_monitoring_tasks

with DAG(
    dag_id="ser_monitoring",
    description="Speech emotion recognition: monitoring report; requests retraining on drift or new feedback",
    schedule="@hourly",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # passes share the loop's state file
    default_args=DEFAULT_ARGS,
    params={
        "loop_config": Param(
            None,
            type=["null", "string"],
            description=f"loop YAML on the workers (default: the Variable {LOOP_CONFIG_VARIABLE})",
        )
    },
    tags=["ser", "monitoring"],
    doc_md=__doc__,
) as dag:
    add_monitoring_tasks()
