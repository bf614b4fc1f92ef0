"""Honest evaluation: metrics with bootstrap CIs, calibration, fold aggregation, per-group gaps and reports.

Typical use::

    result = evaluate_predictions(y_true, y_pred, proba, classes=classes, speakers=speakers)
    fairness = group_metrics(y_true, y_pred, test_manifest[["gender", "corpus", "age"]], classes=classes)
    write_report(run_dir / "eval", result, fairness=fairness)

Accuracy is always reported beside UAR (balanced accuracy); with speaker ids the CIs resample whole speakers.
"""

from ser.evaluate.fairness import age_bands, group_metrics
from ser.evaluate.metrics import (
    EvaluationError,
    aggregate_folds,
    bootstrap_ci,
    classification_metrics,
    encode_labels,
    evaluate_predictions,
    expected_calibration_error,
    metrics_from_confusion,
    reliability_data,
    uar_score,
)
from ser.evaluate.report import plot_confusion, plot_reliability, render_markdown, write_report

__all__ = [
    "EvaluationError",
    "age_bands",
    "aggregate_folds",
    "bootstrap_ci",
    "classification_metrics",
    "encode_labels",
    "evaluate_predictions",
    "expected_calibration_error",
    "group_metrics",
    "metrics_from_confusion",
    "plot_confusion",
    "plot_reliability",
    "reliability_data",
    "render_markdown",
    "uar_score",
    "write_report",
]
