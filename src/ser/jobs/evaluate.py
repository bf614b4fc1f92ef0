"""Evaluation jobs: saved fold predictions → the cross-validation report (UAR beside accuracy, speaker-bootstrap
CIs, per-group gaps, confusion matrix and reliability plots); and a registered model folder scored with
onnxruntime on a labelled manifest → the same report (:class:`ModelEvaluateJob`).

Used by ``ser train``, ``ser evaluate``, ``ser model evaluate``, the pipeline's ``evaluate`` stage and the
registry's promotion gate (:mod:`ser.jobs.release`), which scores candidate and champion with
:func:`score_model` on the same gate set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ser.errors import SerError


def load_folds(run_dir: Path, name: str, folds: list[int] | None = None) -> list[Any]:
    """Saved fold outputs of model ``name`` under ``run_dir``: the given ``folds`` (each must exist), or every fold
    from 0 up to the first missing one. None found is a :class:`~ser.errors.SerError`."""
    from ser.train.cv import load_fold

    if folds is not None:
        outs = [load_fold(run_dir, name, k) for k in folds]
        if any(o is None for o in outs):
            raise SerError(f"fold predictions of {name!r} missing under {run_dir}")
        return outs
    outs, k = [], 0
    while (o := load_fold(run_dir, name, k)) is not None:
        outs.append(o)
        k += 1
    if not outs:
        raise SerError(f"no saved folds for {name!r} under {run_dir}")
    return outs


@dataclass(frozen=True)
class CVReport:
    """The evaluation (``{result, cv, fairness}``) and where its report was written."""

    evaluation: dict[str, Any]
    report_dir: Path
    name: str
    folds: int

    @property
    def report(self) -> Path:
        return self.report_dir / "report.md"

    def summary(self) -> dict[str, Any]:
        """Per-fold and pooled figures: ``uar_mean``, ``uar_std``, ``acc_mean``, ``acc_std``, ``pooled``, ``ci``,
        and the calibration: ``temperature``, ``ece`` (pooled out-of-fold) and ``ece_calibrated`` (after temperature
        scaling, :func:`ser.evaluate.calibration.temperature_scaling`)."""
        cv = self.evaluation["cv"]["metrics"]
        cal = self.evaluation.get("calibration") or {}
        return {
            "model": self.name,
            "folds": self.folds,
            "uar_mean": cv["uar"]["mean"],
            "uar_std": cv["uar"]["std"],
            "acc_mean": cv["accuracy"]["mean"],
            "acc_std": cv["accuracy"]["std"],
            "pooled": self.evaluation["result"]["metrics"],
            "ci": self.evaluation["result"]["ci"],
            "temperature": cal.get("temperature"),
            "ece": cal.get("ece_before"),
            "ece_calibrated": cal.get("ece_after"),
            "report": str(self.report),
        }


@dataclass(frozen=True)
class CVReportJob:
    """Fold outputs of model ``name`` → ``report_dir`` (``metrics.json``, ``report.md``, plots)."""

    outputs: list[Any]
    manifest: pd.DataFrame
    classes: list[str]
    name: str
    report_dir: Path
    n_boot: int = 1000
    seed: int = 0

    def run(self) -> CVReport:
        from ser.evaluate.cv_report import cv_evaluation, write_cv_report

        ev = cv_evaluation(self.outputs, self.manifest, self.classes, n_boot=self.n_boot, seed=self.seed)
        write_cv_report(
            self.report_dir,
            ev,
            title=f"{self.name}: speaker-independent cross-validation",
            meta={"model": self.name, "folds": len(self.outputs), "classes": self.classes},
        )
        return CVReport(ev, self.report_dir, self.name, len(self.outputs))


# ----------------------------------------------------------------------------------------------------------------
# a model folder on a labelled manifest (onnxruntime: the served path)


@dataclass(frozen=True)
class ScoredSet:
    """One model's answers on a labelled set: ``frame`` has ``utt_id``, ``speaker``, ``emotion`` (true label, in
    the model's label profile), ``pred`` and the group columns; ``proba`` ``(n, K)`` in ``labels`` order."""

    frame: pd.DataFrame
    proba: Any
    labels: list[str]
    model_dir: Path
    dropped_labels: dict[str, int]


def read_labelled_manifest(path: Path) -> pd.DataFrame:
    """A labelled manifest: a ser manifest (``.parquet``, :func:`ser.data.schema.read_manifest`) or a CSV with
    ``path``, ``label`` and optional ``speaker``, ``gender`` (read by the ``csv`` corpus adapter)."""
    from ser.data.schema import read_manifest
    from ser.errors import ManifestError

    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    if path.suffix.lower() == ".csv":
        from ser.data.ingest import ingest

        res = ingest("csv", path)
        if len(res.quarantine):
            first = res.quarantine.iloc[0]
            raise ManifestError(
                f"{path}: {len(res.quarantine)} row(s) unreadable, first {first['path']}: {first['reason']}"
            )
        frame = res.manifest
    else:
        frame = read_manifest(path)
    if frame.empty:
        raise ManifestError(f"{path}: no labelled utterances")
    return frame


def score_model(
    model_dir: Path, manifest: pd.DataFrame, *, threads: int | None = None, progress: bool = False
) -> ScoredSet:
    """Score every row of ``manifest`` with the model folder's onnxruntime :class:`~ser.inference.Predictor` (the
    preprocessing it serves with). The labels are first folded through the model's label profile (rows it does
    not cover are dropped and counted); a label left outside the model's classes is a
    :class:`~ser.errors.ManifestError`."""
    import numpy as np

    from ser.audio import load_audio
    from ser.data.labels import apply_profile
    from ser.errors import AudioError, ManifestError
    from ser.inference import Predictor, default_threads
    from ser.progress import track

    predictor = Predictor(model_dir, threads=threads or default_threads())
    profile = predictor.metadata.get("label_profile")
    frame, dropped = apply_profile(manifest, profile) if profile else (manifest.reset_index(drop=True), {})
    unknown = sorted(set(frame["emotion"].astype(str)) - set(predictor.labels))
    if unknown:
        raise ManifestError(
            f"label(s) {', '.join(unknown)} are not among the model's classes ({', '.join(predictor.labels)})"
        )
    if frame.empty:
        raise ManifestError(f"no utterance of the manifest has one of the model's classes ({profile})")
    probas = []
    for path in track(frame["path"].astype(str), "score", len(frame), progress):
        try:
            probas.append(predictor.predict_proba(load_audio(path, predictor.sample_rate)))
        except (AudioError, OSError) as exc:
            raise ManifestError(f"cannot score {path}: {exc}") from None
    proba = np.stack(probas)
    out = frame.reset_index(drop=True).copy()
    out["pred"] = np.array(predictor.labels)[proba.argmax(1)]
    return ScoredSet(out, proba, predictor.labels, Path(model_dir), {str(k): int(v) for k, v in dropped.items()})


def scored_evaluation(scored: ScoredSet, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``{result, fairness}`` of a scored set: the training report's blocks (metrics with speaker-bootstrap CIs,
    per class, confusion, calibration; per-group metrics and gaps), no cross-validation block."""
    from ser.evaluate.cv_report import GROUP_COLUMNS
    from ser.evaluate.fairness import group_metrics
    from ser.evaluate.metrics import evaluate_predictions

    f = scored.frame
    result = evaluate_predictions(
        f["emotion"].astype(str).to_numpy(),
        f["pred"].astype(str).to_numpy(),
        scored.proba,
        classes=scored.labels,
        speakers=f["speaker"].astype(str).to_numpy(),
        n_boot=n_boot,
        seed=seed,
    )
    groups = f[[c for c in GROUP_COLUMNS if c in f.columns]].reset_index(drop=True)
    fairness = group_metrics(
        f["emotion"].astype(str).to_numpy(), f["pred"].astype(str).to_numpy(), groups, classes=scored.labels
    )
    return {"result": result, "fairness": fairness}


def gap_of(evaluation: dict[str, Any], group: str) -> float | None:
    """The UAR gap between the groups of attribute ``group`` (None: fewer than two groups large enough)."""
    return ((evaluation["fairness"]["attributes"].get(group) or {}).get("gap") or {}).get("uar")


@dataclass(frozen=True)
class ModelEvaluation:
    """What :class:`ModelEvaluateJob` did: the evaluation (``{result, fairness}``), the scored set and the report."""

    evaluation: dict[str, Any]
    scored: ScoredSet
    report_dir: Path | None

    @property
    def report(self) -> Path | None:
        return None if self.report_dir is None else self.report_dir / "report.md"

    def summary(self, group: str = "gender") -> dict[str, Any]:
        r = self.evaluation["result"]
        return {
            "model_dir": str(self.scored.model_dir),
            "n": r["n"],
            "speakers": int(self.scored.frame["speaker"].nunique()),
            "uar": r["metrics"]["uar"],
            "accuracy": r["metrics"]["accuracy"],
            "ci": r["ci"],
            "group": group,
            "group_gap": gap_of(self.evaluation, group),
            "dropped_labels": self.scored.dropped_labels,
            "report": None if self.report is None else str(self.report),
        }


@dataclass(frozen=True)
class ModelEvaluateJob:
    """A model folder (a registered version, :func:`ser.registry.resolve`) scored with onnxruntime on a labelled
    ``manifest`` (a DataFrame, or a ``.parquet`` / ``.csv`` file) → ``out`` (``metrics.json``, ``report.md``,
    ``confusion_matrix.png``, ``reliability.png``, ``predictions.parquet``); ``out=None`` writes nothing (the
    gate)."""

    model_dir: Path
    manifest: pd.DataFrame | Path
    out: Path | None = None
    n_boot: int = 1000
    seed: int = 0
    threads: int | None = None
    progress: bool = False
    title: str | None = None

    def run(self) -> ModelEvaluation:
        from ser.evaluate.report import write_report
        from ser.io import write_parquet
        from ser.model_folder import check_model_dir, read_metadata

        model_dir = check_model_dir(self.model_dir)
        frame = self.manifest if isinstance(self.manifest, pd.DataFrame) else read_labelled_manifest(self.manifest)
        scored = score_model(model_dir, frame, threads=self.threads, progress=self.progress)
        ev = scored_evaluation(scored, n_boot=self.n_boot, seed=self.seed)
        if self.out is None:
            return ModelEvaluation(ev, scored, None)
        meta = read_metadata(model_dir)
        name = f"{meta.get('name', model_dir.name)} v{meta.get('version', '?')}"
        source = self.manifest if not isinstance(self.manifest, pd.DataFrame) else "a DataFrame"
        write_report(
            self.out,
            ev["result"],
            fairness=ev["fairness"],
            title=self.title or f"{name} on {Path(str(source)).name}",
            meta={
                "model": name,
                "model folder": str(model_dir),
                "manifest": str(source),
                "utterances": len(scored.frame),
                "speakers": int(scored.frame["speaker"].nunique()),
                "scored with": "onnxruntime (ser.inference.Predictor, the served preprocessing)",
                "dropped by the label profile": scored.dropped_labels or "none",
            },
        )
        cols = [c for c in ("utt_id", "speaker", "emotion", "pred", "path") if c in scored.frame.columns]
        preds = scored.frame[cols].copy()
        for j, label in enumerate(scored.labels):
            preds[f"p_{label}"] = scored.proba[:, j]
        write_parquet(self.out / "predictions.parquet", preds)
        return ModelEvaluation(ev, scored, self.out)
