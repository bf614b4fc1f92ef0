"""Monitoring jobs: the training reference written at export, the monitoring report, retention, deletion and
feedback import. ``ser monitor ...`` / ``ser feedback import``, the pipeline's export stage and the monitoring
DAG call these; the service writes the log through :mod:`ser.monitor` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ser.errors import ConfigError, SerError


def resolve_model(model: str | Path, workdir: str | Path | None = None) -> Path:
    """A model folder from a path (a folder holding ``metadata.json``) or a registry reference
    ``NAME[@ALIAS|/VERSION]`` in ``workdir``'s registry (default ``$SER_WORKDIR`` or ``./runs``)."""
    from ser.model_folder import METADATA_FILE
    from ser.registry import default_workdir, resolve

    p = Path(model)
    if (p / METADATA_FILE).is_file():
        return p
    if p.exists():
        raise SerError(f"not a model folder (no {METADATA_FILE}): {p}")
    return resolve(workdir or default_workdir(), str(model))


def oof_predictions(outputs: list[Any], classes: list[str]) -> pd.DataFrame:
    """Out-of-fold predictions ``utt_id, label, confidence`` from cross-validation fold outputs (``proba``,
    ``utt_ids``; :func:`ser.jobs.evaluate.load_folds`)."""
    frames = []
    for o in outputs:
        proba = np.asarray(o.proba, dtype=np.float64)
        if proba.size == 0:
            continue
        frames.append(
            pd.DataFrame(
                {
                    "utt_id": list(o.utt_ids),
                    "label": [classes[i] for i in proba.argmax(axis=1)],
                    "confidence": proba.max(axis=1),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["utt_id", "label", "confidence"])
    return pd.concat(frames, ignore_index=True).drop_duplicates("utt_id", keep="last")


def _stats_of(path: str, pre: Any) -> tuple[Any, float] | str:
    from ser.monitor.reference import file_stats

    try:
        return file_stats(path, pre)
    except SerError as exc:
        return str(exc)


@dataclass(frozen=True)
class ReferenceOutcome:
    path: Path
    clips: int
    corpus: int
    failed: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "clips": self.clips, "corpus": self.corpus, "failed": self.failed}


@dataclass(frozen=True)
class ReferenceJob:
    """The training reference profile → ``model_dir/reference.parquet``.

    ``manifest``: the training corpus (``utt_id``, ``path``, ``emotion``); at most ``max_clips`` of it are
    profiled (seeded sample). ``predictions``: out-of-fold ``utt_id, label, confidence`` (:func:`oof_predictions`),
    or None. The statistics are computed as the service computes them, with the model folder's own preprocessing.
    """

    model_dir: Path
    manifest: pd.DataFrame
    predictions: pd.DataFrame | None = None
    max_clips: int = 2000
    seed: int = 0
    workers: int | None = 1
    source: str = "cross-validation out-of-fold predictions"

    def run(self) -> ReferenceOutcome:
        from ser.model_folder import Preprocessing, read_metadata
        from ser.monitor.reference import build_reference, sample_indices, write_reference

        pre = Preprocessing.from_metadata(read_metadata(self.model_dir))
        rows = self.manifest.iloc[sample_indices(len(self.manifest), self.max_clips, self.seed)]
        paths = [str(p) for p in rows["path"]]
        results = self._map(paths, pre)
        ok = [i for i, r in enumerate(results) if not isinstance(r, str)]
        if not ok:
            raise SerError(f"reference: no clip of {len(paths)} could be profiled")
        kept = rows.iloc[ok]
        stats = [results[i][0] for i in ok]
        durations = [results[i][1] for i in ok]
        labels: list[str | None] = [None] * len(kept)
        conf: list[float | None] = [None] * len(kept)
        if self.predictions is not None and len(self.predictions):
            by_id = self.predictions.set_index("utt_id")
            for j, u in enumerate(kept["utt_id"]):
                if u in by_id.index:
                    labels[j] = str(by_id.at[u, "label"])
                    conf[j] = float(by_id.at[u, "confidence"])
        true = [str(e) for e in kept["emotion"]] if "emotion" in kept.columns else None
        meta = {
            "corpus_clips": len(self.manifest),
            "sampled": len(rows),
            "profiled": len(kept),
            "failed": len(paths) - len(ok),
            "seed": self.seed,
            "predictions": self.source if any(c is not None for c in conf) else None,
            "with_prediction": sum(c is not None for c in conf),
        }
        table = build_reference(stats, durations, labels=labels, confidences=conf, true_labels=true, meta=meta)
        path = write_reference(self.model_dir, table)
        return ReferenceOutcome(path, len(kept), len(self.manifest), len(paths) - len(ok))

    def _map(self, paths: list[str], pre: Any) -> list[Any]:
        workers = self.workers or 1
        if workers <= 1 or len(paths) < 64:
            return [_stats_of(p, pre) for p in paths]
        from joblib import Parallel, delayed

        return list(
            Parallel(n_jobs=min(workers, len(paths)), backend="loky")(delayed(_stats_of)(p, pre) for p in paths)
        )


@dataclass(frozen=True)
class MonitorReportJob:
    """The monitoring report of the log under ``log`` for ``model`` (a folder or a registry reference in
    ``workdir``) over ``[since, until)``, written to ``out``. ``config``: a :class:`~ser.monitor.drift.DriftConfig`,
    a YAML path, or None (defaults)."""

    log: str
    model: str | Path
    out: Path
    since: Any = None
    until: Any = None
    config: Any = None
    workdir: Path | None = None

    def run(self) -> Any:
        from ser.monitor.drift import DriftConfig
        from ser.monitor.report import monitor_report

        cfg = self.config if isinstance(self.config, DriftConfig) else DriftConfig.from_yaml(self.config)
        model_dir = resolve_model(self.model, self.workdir)
        return monitor_report(self.log, model_dir, self.since, self.until, self.out, cfg)


@dataclass(frozen=True)
class CompareJob:
    """The champion and the shadow model on the same logged answers over ``[since, until)`` (agreement, both
    models' live UAR on the answers that got feedback), and a canary against the champion on their own answers
    with the rollbacks recorded for it (:mod:`ser.monitor.compare`)."""

    log: str
    since: Any = None
    until: Any = None
    n_boot: int = 1000

    def run(self) -> Any:
        from ser.monitor.compare import compare
        from ser.monitor.feedback import latest, read_feedback
        from ser.monitor.log import read_log

        cols = ["prediction_id", "role", "model_version", "label"]
        predictions = read_log(self.log, self.since, self.until, cols).to_pandas()
        fb = latest(read_feedback(self.log)).to_pandas()
        truth = fb.set_index("prediction_id")["label"] if len(fb) else None
        res = compare(predictions, truth, n_boot=self.n_boot)
        if res.canary is None:
            return res
        from dataclasses import replace

        from ser.monitor.canary import read_rollbacks

        versions = set(res.canary["canary_version"].split(", "))
        rollbacks = [e for e in read_rollbacks(self.log) if str(e.get("version")) in versions]
        return replace(res, canary={**res.canary, "rollbacks": rollbacks})


@dataclass(frozen=True)
class PurgeJob:
    """Retention: delete predictions and feedback older than ``older_than_days`` under ``log``."""

    log: str
    older_than_days: float

    def run(self) -> dict[str, dict[str, int]]:
        from ser.monitor.log import purge

        if self.older_than_days < 0:
            raise ConfigError(f"--older-than-days must be >= 0, got {self.older_than_days}")
        return purge(self.log, self.older_than_days)


@dataclass(frozen=True)
class DeleteJob:
    """Delete the predictions and feedback of ``ids`` under ``log`` (a deletion request)."""

    log: str
    ids: tuple[str, ...]

    def run(self) -> dict[str, int]:
        from ser.monitor.log import delete_ids

        return delete_ids(self.log, self.ids)


@dataclass(frozen=True)
class FeedbackImportJob:
    """Bulk labels from a CSV (``prediction_id,label[,source,group,ts]``) into the feedback log under ``log``."""

    log: str
    csv: Path
    classes: tuple[str, ...] | None = None
    check_issued: bool = True

    def run(self) -> Any:
        from ser.monitor.feedback import import_csv

        return import_csv(
            self.log, self.csv, classes=list(self.classes) if self.classes else None, check_issued=self.check_issued
        )
