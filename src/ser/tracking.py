"""Experiment tracking and the registry mirror in MLflow (embedded by default: SQLite + a local artefact folder).

One MLflow run per pipeline run that trains a model: the flattened config as params, the metrics of every fold
(``fold_uar`` / ``fold_accuracy`` with the fold as step), the pooled metrics with their CIs, the per-group gaps, the
dataset fingerprint and code version as tags, and the evaluation report (Markdown, JSON, confusion matrix PNG)
and the model folder as artefacts. Each registered version is a version of the MLflow registered model of the
same name (source ``runs:/<run>/model``), and the ``champion`` / ``challenger`` aliases are mirrored there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ser.errors import SerError


def _flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = str(obj)[:500]
    return out


class Tracker:
    """A thin client over ``mlflow.MlflowClient`` for one tracking URI and experiment."""

    def __init__(self, uri: str, experiment: str = "ser", artifact_root: str | Path | None = None):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            if artifact_root is None and uri.startswith("sqlite:///"):
                artifact_root = Path(uri[len("sqlite:///") :]).parent / "mlartifacts"
            location = Path(artifact_root).resolve().as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id

    def log_pipeline_run(
        self, cfg: Any, inputs: dict[str, dict[str, Any]], evaluation: dict[str, Any], model_dir
    ) -> str:
        """Log a finished training pipeline; returns the run id."""
        with contextlib.redirect_stdout(sys.stderr):  # MLflow prints "View run ..." links; stdout stays for --json
            return self._log_pipeline_run(cfg, inputs, evaluation, model_dir)

    def _log_pipeline_run(self, cfg: Any, inputs: dict[str, dict], evaluation: dict[str, Any], model_dir) -> str:
        from mlflow.entities import Metric, Param, RunTag

        from ser.export import code_version

        c = self.client
        run = c.create_run(self.experiment_id, run_name=f"{cfg.name}-{cfg.train.model}")
        rid = run.info.run_id
        try:
            params = _flatten(cfg.dump())
            params["recipe"] = str(inputs.get("train", {}).get("recipe", {}))[:500]
            tags = {
                "dataset_fingerprint": str(evaluation.get("dataset_fingerprint")),
                "evaluation_key": str(evaluation.get("key")),
                "code_version": code_version(),
                "protocol": str(evaluation.get("protocol")),
                "data_version": str((inputs.get("ingest") or {}).get("data_version")),
                "mlflow.note.content": f"ser pipeline: {evaluation.get('protocol')}",
            }
            metrics = [Metric("uar", float(evaluation["uar"]), 0, 0), Metric("accuracy", evaluation["accuracy"], 0, 0)]
            if evaluation.get("uar_std") is not None:
                metrics.append(Metric("uar_std", float(evaluation["uar_std"]), 0, 0))
            for k, v in enumerate(evaluation.get("uar_per_fold") or []):
                metrics.append(Metric("fold_uar", float(v), 0, k))
            for name, v in (evaluation.get("pooled") or {}).items():
                if isinstance(v, int | float):
                    metrics.append(Metric(f"pooled_{name}", float(v), 0, 0))
            for name, v in (evaluation.get("group_gaps") or {}).items():
                if v is not None:
                    metrics.append(Metric(f"group_gap_uar_{name}", float(v), 0, 0))
            c.log_batch(
                rid,
                metrics=metrics,
                params=[Param(k[:250], v) for k, v in params.items()],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
            report = inputs.get("evaluate", {}).get("outputs", {}).get("report_dir")
            if report and Path(report).is_dir():
                c.log_artifacts(rid, report, "evaluation")
            c.log_artifacts(rid, str(model_dir), "model")
        except Exception:
            c.set_terminated(rid, "FAILED")
            raise
        c.set_terminated(rid, "FINISHED")
        return rid

    def create_version(self, name: str, model_dir, run_id: str) -> int:
        """A new version of registered model ``name`` whose source is the run's ``model`` artefact."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, description="Speech emotion recognition (ONNX + metadata)")
        mv = self.client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
        return int(mv.version)

    def set_alias(self, name: str, alias: str, version: int | None) -> None:
        if version is None:
            with contextlib.suppress(Exception):  # the alias was not set
                self.client.delete_registered_model_alias(name, alias)
            return
        self.client.set_registered_model_alias(name, alias, str(version))

    def log_gate(self, run_id: str | None, record: dict[str, Any]) -> None:
        """The registry decision of a run (:func:`ser.jobs.release.gate_record`): tags ``gate_outcome``,
        ``gate_basis``, ``gate_reason``; metrics ``gate_n``, ``gate_n_unseen``, ``gate_uar_candidate``,
        ``gate_uar_champion``, ``gate_uar_diff`` and its CI ``gate_uar_diff_low`` / ``_high``."""
        if run_id is None:
            return
        from mlflow.entities import Metric, RunTag

        tags = {
            "gate_outcome": record.get("outcome"),
            "gate_basis": record.get("basis"),
            "gate_reason": record["reason"],
        }
        values: dict[str, Any] = {}
        gate = record.get("gate") or {}
        values.update(gate_n=gate.get("n"), gate_n_unseen=gate.get("n_unseen"))
        for who in ("candidate", "champion"):
            values[f"gate_uar_{who}"] = (record.get(f"{who}_score") or {}).get("uar")
        diff = record.get("uar_diff") or {}
        values.update(
            gate_uar_diff=diff.get("diff"), gate_uar_diff_low=diff.get("low"), gate_uar_diff_high=diff.get("high")
        )
        metrics = [Metric(k, float(v), 0, 0) for k, v in values.items() if v is not None]
        self.client.log_batch(
            run_id, metrics=metrics, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items() if v is not None]
        )

    def tag_run(self, run_id: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v)[:5000])

    def aliases(self, name: str) -> dict[str, int]:
        rm = self.client.get_registered_model(name)
        return {a: int(v) for a, v in (rm.aliases or {}).items()}


def open_tracker(workdir: str | Path, uri: str | None = None, experiment: str = "ser") -> Tracker | None:
    """The tracker of a workdir (its SQLite store when ``uri`` is None), or None when it has none."""
    if uri is None:
        db = Path(workdir) / "mlflow.db"
        if not db.is_file():
            return None
        uri = f"sqlite:///{db.resolve()}"
    try:
        return Tracker(uri, experiment)
    except ImportError as exc:
        raise SerError("tracking needs mlflow (pip install 'ser[pipeline]')") from exc
