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


def retrain(config: str | Path | None, workdir: str | Path) -> dict[str, Any]:
    """One pipeline run of the YAML ``config`` in ``workdir`` for the closed loop (:class:`ser.jobs.loop.LoopJob`;
    the jobs layer does not import the pipeline): the run summary (:meth:`RunSummary.to_dict`), whose ``result``
    is the register stage's record (the promotion gate's decision)."""
    return run(load_config(config), workdir).to_dict()


__all__ = ["PipelineConfig", "RunSummary", "load_config", "parse_config", "retrain", "run"]
