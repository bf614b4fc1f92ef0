"""The pipeline: corpus → registered model in one call, locally (this runner) or as Airflow DAGs (``dags/``).

>>> from ser.pipeline import run, load_config
>>> summary = run(load_config(None), "runs")      # the embedded default: the synthetic demo corpus
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ser.pipeline.config import PipelineConfig, load_config, parse_config
from ser.pipeline.runner import RunSummary, run_pipeline


def run(
    cfg: PipelineConfig,
    workdir: str | Path,
    *,
    only: Iterable[str] | None = None,
    force: Iterable[str] = (),
    progress: bool = False,
    on_stage: Callable[[str, str], None] | None = None,
) -> RunSummary:
    """Run (or resume) the training pipeline of ``cfg`` in ``workdir``; see :func:`ser.pipeline.runner.run_pipeline`."""
    from ser.pipeline.stages import STAGES

    return run_pipeline(STAGES, cfg, workdir, only=only, force=force, progress=progress, on_stage=on_stage)


MODEL_DIR_VARIABLE = "AIP_MODEL_DIR"
"""Set by Vertex AI custom training jobs (a ``gs://`` folder whose files become the uploaded model's artefacts); set
it on a Cloud Run job to the same end. ``ser pipeline run`` copies the registered model folder there."""


def copy_model_folder(summary: RunSummary, dest_uri: str) -> str:
    """Copy the model folder the run registered (``model.onnx``, ``metadata.json``, card, ... at the root of
    ``dest_uri``, as Vertex AI expects of ``AIP_MODEL_DIR``) to a path or fsspec URI, with the copier of
    ``register.publish`` (:func:`ser.uri.publish_folder`: the files, then a ``_COMPLETE`` marker). Returns
    ``dest_uri``; :class:`ser.errors.SerError` when the run failed or registered nothing (e.g. ``--only``)."""
    from ser.errors import SerError
    from ser.uri import publish_folder

    result = summary.to_dict()["result"]
    if not summary.ok or not result:
        raise SerError(f"no registered model to copy to {dest_uri}: the run failed or did not reach register")
    return publish_folder(result["model_dir"], dest_uri)


def retrain(config: str | Path | None, workdir: str | Path) -> dict[str, Any]:
    """One pipeline run of the YAML ``config`` in ``workdir`` for the closed loop (:class:`ser.jobs.loop.LoopJob`;
    the jobs layer does not import the pipeline): the run summary (:meth:`RunSummary.to_dict`), whose ``result``
    is the register stage's record (the promotion gate's decision)."""
    return run(load_config(config), workdir).to_dict()


__all__ = ["PipelineConfig", "RunSummary", "copy_model_folder", "load_config", "parse_config", "retrain", "run"]
