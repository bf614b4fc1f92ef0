"""Evaluation artefacts in a run's output folder: ``metrics.json``, ``report.md`` and the PNG plots.

Plots are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot state, no display).
Every file is written atomically through :mod:`ser.io`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from ser.evaluate.metrics import CI_METRICS, SUMMARY_METRICS, EvaluationError, normalize_rows
from ser.io import atomic_write, write_json, write_text

METRICS_JSON = "metrics.json"
REPORT_MD = "report.md"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability.png"

_LABELS = {
    "accuracy": "Accuracy",
    "uar": "UAR (balanced accuracy)",
    "macro_precision": "Macro precision",
    "macro_recall": "Macro recall",
    "macro_f1": "Macro F1",
    "weighted_precision": "Weighted precision",
    "weighted_recall": "Weighted recall",
    "weighted_f1": "Weighted F1",
    "ece": "ECE (expected calibration error)",
}


def _save(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120, bbox_inches="tight"))


def plot_confusion(
    cm: ArrayLike, classes: Sequence[str | int], path: str | Path, *, title: str = "Confusion matrix"
) -> Path:
    """Draw a confusion matrix of counts (rows = true class) as a PNG at ``path``.

    Cells are coloured by the row-normalised fraction (recall along the diagonal) and show the count and the row
    percentage; a class with no support shows its counts and "n/a".
    """
    counts = np.asarray(cm, dtype=np.int64)
    k = len(classes)
    if counts.shape != (k, k):
        raise EvaluationError(f"confusion matrix must be {k}x{k} for {k} classes, got shape {counts.shape}")
    norm = normalize_rows(counts)
    side = max(4.0, 0.85 * k + 2.0)
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot()
    image = ax.imshow(np.nan_to_num(norm), cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    names = [str(c) for c in classes]
    ax.set_xticks(range(k), labels=names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), labels=names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(f"{title} (n = {int(counts.sum())})")
    fontsize = 9 if k <= 8 else 7
    for i in range(k):
        for j in range(k):
            frac = norm[i, j]
            pct = "n/a" if np.isnan(frac) else f"{100 * frac:.1f}%"
            color = "white" if not np.isnan(frac) and frac > 0.5 else "black"
            ax.text(j, i, f"{counts[i, j]}\n{pct}", ha="center", va="center", color=color, fontsize=fontsize)
    return _save(fig, path)


def plot_reliability(calibration: Mapping[str, Any], path: str | Path, *, title: str = "Reliability diagram") -> Path:
    """Draw a reliability diagram from :func:`ser.evaluate.metrics.reliability_data` output as a PNG at ``path``.

    Top: accuracy per confidence bin against the diagonal of perfect calibration, with the gap to the mean
    confidence shaded. Bottom: how many utterances fall in each bin.
    """
    bins = calibration.get("bins") or []
    if not bins:
        raise EvaluationError("calibration data has no bins")
    lower = np.array([b["lower"] for b in bins])
    upper = np.array([b["upper"] for b in bins])
    width = upper - lower
    centre = (lower + upper) / 2
    acc = np.array([np.nan if b["accuracy"] is None else b["accuracy"] for b in bins])
    conf = np.array([np.nan if b["confidence"] is None else b["confidence"] for b in bins])
    count = np.array([b["count"] for b in bins])
    filled = ~np.isnan(acc)

    fig = Figure(figsize=(5.5, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.bar(
        lower[filled],
        acc[filled],
        width=width[filled],
        align="edge",
        color="tab:blue",
        edgecolor="black",
        label="accuracy",
    )
    gap_base = np.minimum(acc, conf)[filled]
    gap_height = np.abs(conf - acc)[filled]
    top.bar(
        lower[filled],
        gap_height,
        bottom=gap_base,
        width=width[filled],
        align="edge",
        color="tab:red",
        edgecolor="tab:red",
        alpha=0.3,
        hatch="//",
        label="gap to confidence",
    )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("Accuracy")
    ece = calibration.get("ece")
    top.set_title(title if ece is None else f"{title} (ECE = {ece:.4f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centre, count, width=width * 0.9, color="tab:grey")
    bottom.set_xlabel("Confidence (top-class probability)")
    bottom.set_ylabel("Count")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------------------
# Markdown


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _overall_section(result: Mapping[str, Any]) -> list[str]:
    ci = result.get("ci") or {}
    lines = ["## Overall", ""]
    lines.append(
        f"{result['n']} utterances, {len(result['classes'])} classes: {', '.join(map(str, result['classes']))}."
    )
    if ci:
        unit = "speakers" if ci["method"] == "speaker" else "utterances"
        lines.append(
            f"Confidence intervals: {100 * ci['level']:.0f}% percentile bootstrap over {ci['n_clusters']} {unit} "
            f"({ci['n_boot']} resamples, seed {ci['seed']})."
        )
    lines.append("")
    level = f"{100 * ci['level']:.0f}% CI" if ci else "CI"
    rows = []
    for name in SUMMARY_METRICS:
        value = result["metrics"].get(name)
        if name == "ece" and value is None:
            continue
        interval = ci.get(name) if name in CI_METRICS else None
        ci_text = f"{_fmt(interval['low'])} – {_fmt(interval['high'])}" if interval else ""
        rows.append([_LABELS[name], _fmt(value), ci_text])
    lines += _table(["Metric", "Value", level], rows)
    return [*lines, ""]


def _per_class_section(result: Mapping[str, Any]) -> list[str]:
    rows = [
        [c["class"], _fmt(c["precision"]), _fmt(c["recall"]), _fmt(c["f1"]), c["support"]] for c in result["per_class"]
    ]
    return ["## Per class", "", *_table(["Class", "Precision", "Recall", "F1", "Support"], rows), ""]


def _confusion_section(confusion: Mapping[str, Any], png: str | None, heading: str) -> list[str]:
    labels = [str(c) for c in confusion["labels"]]
    rows = [[labels[i], *row] for i, row in enumerate(confusion["counts"])]
    lines = [f"## {heading}", ""]
    if png:
        lines += [f"![{heading}]({png})", ""]
    lines += ["Counts (rows = true class, columns = predicted class):", ""]
    lines += _table(["true \\ predicted", *labels], rows)
    return [*lines, ""]


def _calibration_section(
    calibration: Mapping[str, Any] | None, png: str | None, temperature: Mapping[str, Any] | None = None
) -> list[str]:
    lines = ["## Calibration", ""]
    if not calibration:
        return [*lines, "No class probabilities were supplied, so calibration was not measured.", ""]
    lines.append(
        f"ECE = {_fmt(calibration['ece'])}, MCE = {_fmt(calibration['mce'])} "
        f"({calibration['n_bins']} equal-width confidence bins)."
    )
    lines.append("")
    if temperature:
        t = temperature
        bound = " (at the edge of its search interval)" if t.get("at_bound") else ""
        lines += [
            f"Temperature scaling: T = {_fmt(t['temperature'], 3)}{bound}, fitted on {t['n']} out-of-fold predictions "
            f"({t['n_folds']} folds) by minimising the NLL. ECE {_fmt(t['ece_before'])} → {_fmt(t['ece_after'])}, "
            f"NLL {_fmt(t['nll_before'])} → {_fmt(t['nll_after'])} ({t['n_bins']} bins; after: {t['after']}). "
            "Scaling changes no arg-max: accuracy and UAR are unchanged.",
            "",
        ]
    if png:
        lines += [f"![Reliability diagram]({png})", ""]
    return lines


def _cv_section(cv: Mapping[str, Any]) -> list[str]:
    names = list(cv["metrics"])
    lines = ["## Cross-validation", "", f"{cv['n_folds']} folds; mean ± sample standard deviation over folds.", ""]
    rows = [[_LABELS.get(m, m), f"{_fmt(cv['metrics'][m]['mean'])} ± {_fmt(cv['metrics'][m]['std'])}"] for m in names]
    lines += _table(["Metric", "Mean ± std"], rows)
    lines += ["", "### Per fold", ""]
    rows = [[f["fold"], f["n"], *(_fmt(f.get(m)) for m in names)] for f in cv["per_fold"]]
    lines += _table(["Fold", "n", *names], rows)
    pooled = cv.get("pooled")
    if pooled:
        lines += [
            "",
            f"Pooled over folds (n = {pooled['n']}): accuracy {_fmt(pooled['accuracy'])}, "
            f"UAR {_fmt(pooled['uar'])}, macro F1 {_fmt(pooled['macro_f1'])}.",
        ]
    lines.append("")
    if cv.get("confusion"):
        lines += _confusion_section(cv["confusion"], None, "Pooled confusion matrix over folds")
    return lines


def _fairness_section(fairness: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Per group",
        "",
        f"Groups with fewer than {fairness['min_group_size']} utterances are listed but left out of the gaps.",
        "",
    ]
    for attr, block in fairness["attributes"].items():
        lines += [f"### {attr}", ""]
        if not block["groups"]:
            lines += ["No known values.", ""]
            continue
        rows = [
            [g["group"], g["count"], _fmt(g["accuracy"]), _fmt(g["uar"]), _fmt(g["included"])] for g in block["groups"]
        ]
        lines += _table(["Group", "n", "Accuracy", "UAR", "In gap"], rows)
        gap = block["gap"]
        if gap.get("accuracy") is None:
            lines += ["", "Gap: fewer than two groups are large enough to compare.", ""]
            continue
        worst = block.get("worst", {})
        best = block.get("best", {})
        lines += [
            "",
            f"Gap (max − min): accuracy {_fmt(gap['accuracy'])} ({best.get('accuracy')} best, "
            f"{worst.get('accuracy')} worst), UAR {_fmt(gap['uar'])} "
            f"({best.get('uar')} best, {worst.get('uar')} worst).",
            "",
        ]
    return lines


def render_markdown(
    result: Mapping[str, Any],
    *,
    cv: Mapping[str, Any] | None = None,
    fairness: Mapping[str, Any] | None = None,
    title: str = "Evaluation report",
    meta: Mapping[str, Any] | None = None,
    confusion_png: str | None = CONFUSION_PNG,
    reliability_png: str | None = RELIABILITY_PNG,
    temperature: Mapping[str, Any] | None = None,
) -> str:
    """The Markdown report (overall metrics with CIs, per class, confusion, calibration with the ``temperature``
    scaling when given, per fold, per group)."""
    lines = [f"# {title}", ""]
    if meta:
        lines += [f"- **{_cell(k)}**: {_cell(v)}" for k, v in meta.items()]
        lines.append("")
    lines += _overall_section(result)
    lines += _per_class_section(result)
    lines += _confusion_section(result["confusion"], confusion_png, "Confusion matrix")
    lines += _calibration_section(result.get("calibration"), reliability_png, temperature)
    if cv:
        lines += _cv_section(cv)
    if fairness:
        lines += _fairness_section(fairness)
    return "\n".join(lines).rstrip() + "\n"


def write_report(
    out_dir: str | Path,
    result: Mapping[str, Any],
    *,
    cv: Mapping[str, Any] | None = None,
    fairness: Mapping[str, Any] | None = None,
    temperature: Mapping[str, Any] | None = None,
    title: str = "Evaluation report",
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md``, ``confusion_matrix.png`` and (with probabilities) ``reliability.png``.

    ``result`` is :func:`~ser.evaluate.metrics.evaluate_predictions` output (for cross-validation, best the pooled
    out-of-fold predictions), ``cv`` :func:`~ser.evaluate.metrics.aggregate_folds` output, ``fairness``
    :func:`~ser.evaluate.fairness.group_metrics` output and ``temperature``
    :func:`~ser.evaluate.calibration.temperature_scaling` output; ``meta`` is free-form run information (model,
    data, ...) put at the top of both files. Returns the paths written, keyed ``json``, ``markdown``, ``confusion``,
    ``reliability``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EvaluationError(f"report folder is a file: {out}")
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["confusion"] = plot_confusion(result["confusion"]["counts"], result["classes"], out / CONFUSION_PNG)
    calibration = result.get("calibration")
    if calibration:
        paths["reliability"] = plot_reliability(calibration, out / RELIABILITY_PNG)
    else:
        (out / RELIABILITY_PNG).unlink(missing_ok=True)  # a stale plot from an earlier run would mislead
    payload = {
        "meta": dict(meta or {}),
        "overall": result,
        "cross_validation": cv,
        "fairness": fairness,
        "temperature_scaling": temperature,
        "files": {**{k: p.name for k, p in paths.items()}, "markdown": REPORT_MD},
    }
    paths["json"] = write_json(out / METRICS_JSON, payload)
    markdown = render_markdown(
        result,
        cv=cv,
        fairness=fairness,
        title=title,
        meta=meta,
        confusion_png=CONFUSION_PNG,
        reliability_png=RELIABILITY_PNG if calibration else None,
        temperature=temperature,
    )
    paths["markdown"] = write_text(out / REPORT_MD, markdown)
    return paths
