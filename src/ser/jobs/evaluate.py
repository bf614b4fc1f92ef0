"""Evaluation jobs: saved fold predictions → the cross-validation report (UAR beside accuracy, speaker-bootstrap
CIs, per-group gaps, confusion matrix and reliability plots).

Used by ``ser train``, ``ser evaluate`` and the pipeline's ``evaluate`` stage.
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
