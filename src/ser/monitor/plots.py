"""The monitoring report as one self-contained HTML page: tables and matplotlib PNGs embedded as base64.

Plots are drawn on bare :class:`matplotlib.figure.Figure` objects with the Agg canvas (no pyplot state, no
display): PSI per input statistic, PSI and KS per log-mel band, reference vs live bins of each flagged statistic,
the label mix, confidence histograms, live UAR per model version with its CI.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_FLAG = "#c0392b"
_OK = "#2e86c1"
_REF = "#7f8c8d"


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_psi(data: dict[str, Any]) -> Figure | None:
    """Horizontal bars: PSI of every statistic and mix, flagged ones in red, the threshold as a line."""
    dd = data.get("data_drift") or {}
    pdrift = data.get("prediction_drift") or {}
    rows = [*dd.get("statistics", []), *dd.get("categorical", [])]
    rows += [pdrift[k] for k in ("label", "confidence") if pdrift.get(k)]
    rows = [r for r in rows if r.get("psi") is not None]
    if not rows:
        return None
    fig = Figure(figsize=(7, 0.35 * len(rows) + 1.2))
    ax = fig.add_subplot()
    names = [("prediction " if r in (pdrift.get("label"), pdrift.get("confidence")) else "") + r["name"] for r in rows]
    values = [r["psi"] for r in rows]
    ax.barh(names, values, color=[_FLAG if r["flagged"] else _OK for r in rows])
    ax.axvline(data["config"]["psi"], color="k", ls="--", lw=1, label=f"PSI threshold {data['config']['psi']}")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.invert_yaxis()
    ax.set_xlabel("PSI (live vs reference)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Drift per statistic (red: flagged)")
    return fig


def plot_bands(data: dict[str, Any]) -> Figure | None:
    """PSI and KS D per log-mel band for the band means and standard deviations."""
    bands = (data.get("data_drift") or {}).get("bands") or {}
    if not bands:
        return None
    fig = Figure(figsize=(8, 4.5))
    axes = fig.subplots(2, 1, sharex=True)
    for name, b in bands.items():
        psi = np.array([np.nan if v is None else v for v in b["psi"]])
        ks = np.array([np.nan if v is None else v for v in b["ks"]])
        axes[0].plot(psi, marker=".", label=name)
        axes[1].plot(ks, marker=".", label=name)
        for i in b["flagged"]:
            axes[0].plot(i, psi[i], "o", mfc="none", color=_FLAG)
    axes[0].axhline(data["config"]["psi"], color="k", ls="--", lw=1)
    axes[1].axhline(data["config"]["ks"], color="k", ls="--", lw=1)
    axes[0].set_ylabel("PSI")
    axes[1].set_ylabel("KS D")
    axes[1].set_xlabel("log-mel band")
    axes[0].legend(fontsize=8)
    axes[0].set_title("Drift per log-mel band (circled: flagged)")
    return fig


def plot_flagged_bins(data: dict[str, Any]) -> Figure | None:
    """Reference vs live share per reference-quantile bin of each flagged continuous statistic (up to 8)."""
    dd = data.get("data_drift") or {}
    rows = [r for r in dd.get("statistics", []) if r["flagged"]][:8]
    if not rows:
        return None
    cols = min(4, len(rows))
    nrows = (len(rows) + cols - 1) // cols
    fig = Figure(figsize=(3.2 * cols, 2.6 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    for ax, r in zip(axes, rows, strict=False):
        ref, live = r["bins"]["reference"], r["bins"]["live"]
        x = np.arange(len(ref))
        ax.bar(x - 0.2, ref, 0.4, color=_REF, label="reference")
        ax.bar(x + 0.2, live, 0.4, color=_FLAG, label="live")
        ax.set_title(f"{r['name']} (PSI {r['psi']:.2f})", fontsize=9)
        ax.set_xlabel("reference quantile bin", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(rows) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    return fig


def plot_label_mix(data: dict[str, Any]) -> Figure | None:
    r = (data.get("prediction_drift") or {}).get("label")
    if not r or not r["categories"]:
        return None
    cats = r["categories"]
    x = np.arange(len(cats))
    fig = Figure(figsize=(max(5, 0.8 * len(cats) + 2), 3.2))
    ax = fig.add_subplot()
    ax.bar(x - 0.2, r["reference"], 0.4, color=_REF, label="reference (out-of-fold)")
    ax.bar(x + 0.2, r["live"], 0.4, color=_FLAG if r["flagged"] else _OK, label="live")
    ax.set_xticks(x, cats, rotation=30, ha="right")
    ax.set_ylabel("share of answers")
    ax.set_title(f"Predicted-label mix (PSI {r['psi'] if r['psi'] is not None else float('nan'):.3f})")
    ax.legend(fontsize=8)
    return fig


def plot_confidence(data: dict[str, Any]) -> Figure | None:
    h = (data.get("prediction_drift") or {}).get("confidence_hist")
    if not h:
        return None
    edges = np.asarray(h["edges"])
    ref, live = np.asarray(h["reference"], float), np.asarray(h["live"], float)
    if ref.sum() == 0 and live.sum() == 0:
        return None
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    for counts, color, label in ((ref, _REF, "reference (out-of-fold)"), (live, _OK, "live")):
        if counts.sum():
            ax.stairs(counts / counts.sum(), edges, color=color, lw=2, label=label)
    ax.set_xlabel("confidence (largest probability)")
    ax.set_ylabel("share")
    ax.set_title("Confidence")
    ax.legend(fontsize=8)
    return fig


def plot_live_uar(data: dict[str, Any]) -> Figure | None:
    versions = (data.get("accuracy") or {}).get("versions") or []
    if not versions:
        return None
    names = [
        f"{v['model_name']} v{v['model_version']}" + (" (shadow)" if v["role"] == "shadow" else "") for v in versions
    ]
    uar = np.array([v["uar"] for v in versions], dtype=float)
    lo = np.array([((v["ci"] or {}).get("uar") or {}).get("low") or v["uar"] for v in versions], dtype=float)
    hi = np.array([((v["ci"] or {}).get("uar") or {}).get("high") or v["uar"] for v in versions], dtype=float)
    fig = Figure(figsize=(max(5, 1.2 * len(names) + 2), 3.4))
    ax = fig.add_subplot()
    x = np.arange(len(names))
    colors = [_FLAG if v["check"]["flagged"] else _OK for v in versions]
    ax.bar(x, uar, color=colors)
    ax.errorbar(x, uar, yerr=[uar - lo, hi - uar], fmt="none", ecolor="k", capsize=4)
    cv = data["model"].get("cv_uar")
    if cv is not None:
        ax.axhline(cv, color="k", ls="--", lw=1, label=f"cross-validated UAR of v{data['model']['version']}")
        ax.legend(fontsize=8)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("live UAR (95 % CI)")
    ax.set_title("Live UAR per model version (from feedback)")
    return fig


PLOTS: list[tuple[str, str, Callable[[dict[str, Any]], Figure | None]]] = [
    ("drift_psi", "Drift per statistic", plot_psi),
    ("flagged_bins", "Flagged statistics: reference vs live", plot_flagged_bins),
    ("bands", "Drift per log-mel band", plot_bands),
    ("label_mix", "Label mix vs reference", plot_label_mix),
    ("confidence", "Confidence", plot_confidence),
    ("live_uar", "Live UAR per version", plot_live_uar),
]


def _f(v: Any, fmt: str = "{:.3g}") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return fmt.format(v)
    return html.escape(str(v))


def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _status(r: dict[str, Any]) -> str:
    cls = "flag" if r.get("flagged") else "ok" if r.get("status") == "ok" else "na"
    return f'<span class="{cls}">{html.escape(str(r.get("status")))}</span>'


def _drift_tables(data: dict[str, Any]) -> str:
    dd = data.get("data_drift")
    if not dd:
        return "<p>No drift computed: " + html.escape("; ".join(data.get("notes") or ["no reference"])) + "</p>"
    stats = [
        [html.escape(r["name"]), _status(r), _f(r["psi"]), _f(r["ks"]), _f(r["ks_p"], "{:.1e}"),
         _f(r["reference"]["p50"]), _f(r["live"]["mean"]), _f(r["reference"]["mean"]), r["n_live"]]
        for r in dd["statistics"]
    ]  # fmt: skip
    out = "<h3>Input statistics</h3>" + _table(
        ["statistic", "status", "PSI", "KS D", "KS p", "ref median", "live mean", "ref mean", "live n"], stats
    )
    cats = [
        [html.escape(r["name"]), _status(r), _f(r["psi"]),
         html.escape(", ".join(f"{c} {s:.0%}" for c, s in zip(r["categories"], r["reference"], strict=True))),
         html.escape(", ".join(f"{c} {s:.0%}" for c, s in zip(r["categories"], r["live"], strict=True)))]
        for r in dd["categorical"]
    ]  # fmt: skip
    out += "<h3>File facts</h3>" + _table(["mix", "status", "PSI", "reference", "live"], cats)
    bands = [
        [
            html.escape(name),
            _status(b),
            html.escape(", ".join(map(str, b["flagged"])) or "none"),
            _f(b["alpha"], "{:.1e}"),
        ]
        for name, b in dd["bands"].items()
    ]
    if bands:
        out += "<h3>Log-mel bands</h3>" + _table(["vector", "status", "flagged bands", "α per band"], bands)
    return out


def _prediction_table(data: dict[str, Any]) -> str:
    pdrift = data.get("prediction_drift")
    if not pdrift:
        return ""
    rows = [
        [key, _status(r), _f(r.get("psi")), _f(r.get("ks")), r["n_live"], r["n_reference"]]
        for key, r in (("label mix", pdrift["label"]), ("confidence", pdrift["confidence"]))
    ]
    ver = pdrift.get("model_version")
    return f"<p>Answers compared: {pdrift['rows']} (version {html.escape(str(ver or 'all'))}).</p>" + _table(
        ["", "status", "PSI", "KS D", "live n", "reference n"], rows
    )


def _quality_table(data: dict[str, Any]) -> str:
    q = data.get("quality")
    if not q:
        return ""
    rows = [
        [html.escape(r["name"]), _status(r), _f(r["live_share"], "{:.1%}"), _f(r["reference_share"], "{:.1%}"),
         _f(r["p"], "{:.1e}")]
        for r in q
    ]  # fmt: skip
    c = data["config"]["quality"]
    note = (
        f"<p>silence: speech fraction &lt; {c['silence_below']}; clipping: clipped fraction &gt; {c['clipped_above']}; "
        f"low SNR: &lt; {c['low_snr_below']} dB; narrow band: energy above 4 kHz &lt; {c['narrowband_below']:.1%}. "
        f"Flagged when a share rose by ≥ {c['max_increase']:.0%} (and p &lt; α).</p>"
    )
    return note + _table(["problem", "status", "live share", "reference share", "p"], rows)


def _accuracy_table(data: dict[str, Any]) -> str:
    acc = data.get("accuracy") or {}
    head = (
        f"<p>Feedback rows: {acc.get('feedback_rows', 0)}; labelled predictions in the window: {acc.get('labelled', 0)}"
    )
    head += f" (without an answer: {acc.get('unanswered', 0)}).</p>"
    rows = []
    for v in acc.get("versions", []):
        ci = (v["ci"] or {}).get("uar") or {}
        recall = ", ".join(
            f"{c['class']} {c['recall']:.0%}" + (f" ({c['low']:.0%}–{c['high']:.0%})" if c["low"] is not None else "")
            for c in v["per_class"]
            if c["recall"] is not None
        )
        uar = f"{v['uar']:.1%} ({_f(ci.get('low'), '{:.1%}')}–{_f(ci.get('high'), '{:.1%}')})"
        groups = ", ".join(f"{g}: {x['uar']:.1%} (n {x['n']})" for g, x in v["groups"].items())
        rows.append(
            [html.escape(f"{v['model_name']} v{v['model_version']}"), html.escape(v["role"]), v["n"],
             _f(v["accuracy"], "{:.1%}"), uar, _status(v["check"]), html.escape(recall), html.escape(groups)]
        )  # fmt: skip
    if not rows:
        return head
    return head + _table(
        ["model", "role", "n", "accuracy", "UAR (CI)", "check", "recall per class (CI)", "groups"], rows
    )


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f4f4f4}.flag{color:#c0392b;font-weight:bold}.ok{color:#1e8449}.na{color:#888}
.banner{padding:.6em 1em;border-radius:4px;margin:1em 0}.bad{background:#fadbd8}.good{background:#d5f5e3}
img{max-width:100%;margin:.5em 0}
"""


def render_html(data: dict[str, Any]) -> tuple[str, list[str]]:
    """``(page, names of the plots drawn)`` for a report's data."""
    images, drawn = [], []
    for name, title, fn in PLOTS:
        fig = fn(data)
        if fig is not None:
            images.append(f'<h3>{html.escape(title)}</h3><img alt="{name}" src="data:image/png;base64,{_png(fig)}">')
            drawn.append(name)
    m, w = data["model"], data["window"]
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in data["reasons"])
    banner = (
        f'<div class="banner bad"><b>Thresholds crossed</b><ul>{reasons}</ul></div>'
        if data["flagged"]
        else '<div class="banner good"><b>No threshold crossed.</b></div>'
    )
    ref = m.get("reference") or {}
    notes = "".join(f"<p><i>{html.escape(n)}</i></p>" for n in data.get("notes") or [])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ser monitoring report</title>
<style>{_CSS}</style></head><body>
<h1>Monitoring report</h1>
<p>Model <b>{html.escape(str(m.get("name")))}</b> version {html.escape(str(m.get("version")))}
 · window {html.escape(str(w["since"] or "start of log"))} → {html.escape(str(w["until"]))}
 · {data["log"]["predictions"]} logged predictions ({html.escape(json_roles(data["log"]["roles"]))})
 · reference: {ref.get("clips", "none")} training clips · generated {html.escape(data["generated"])}</p>
{banner}{notes}
<h2>Data drift</h2>{_drift_tables(data)}
<h2>Prediction drift</h2>{_prediction_table(data)}
<h2>Input quality</h2>{_quality_table(data)}
<h2>Live accuracy (feedback)</h2>{_accuracy_table(data)}
<h2>Plots</h2>{"".join(images) or "<p>Nothing to plot.</p>"}
<p style="color:#888;font-size:.85em">Effect size and significance must both cross: PSI ≥ {data["config"]["psi"]} or
KS D ≥ {data["config"]["ks"]}, with p &lt; {data["config"]["alpha"]}. Written by <code>ser monitor report</code>.</p>
</body></html>
"""
    return page, drawn


def json_roles(roles: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(roles.items())) or "none"
