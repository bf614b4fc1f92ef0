"""Validation: per-file signal checks, duplicates and dataset balance → validated manifest, quarantine, report.

A per-file problem (undecodable, NaN samples, near-silence, clipping, DC offset, duration out of bounds, a
duplicate) quarantines the file with its reason, never crashes the run. Dataset-level findings (class balance,
speakers per label, gender balance) go to the report; failure thresholds decide the exit status.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ser.audio import pcm_hash, read_native, to_mono
from ser.data import schema
from ser.errors import AudioError, ConfigError, ManifestError
from ser.io import write_json, write_parquet, write_text
from ser.progress import track


class ValidationConfig(BaseModel):
    """Per-file bounds and dataset failure thresholds."""

    model_config = ConfigDict(extra="forbid")

    min_duration_s: float = Field(0.3, ge=0)
    max_duration_s: float = Field(60.0, gt=0)
    silence_peak_dbfs: float = Field(-50.0, description="peak below this → near-silence")
    max_clip_ratio: float = Field(0.01, ge=0, le=1, description="share of samples at |x| ≥ 0.999")
    max_dc_offset: float = Field(0.1, ge=0)
    allowed_sample_rates: list[int] | None = None
    max_quarantined_fraction: float = Field(0.05, ge=0, le=1)
    min_files_per_class: int = Field(10, ge=0)
    max_imbalance_ratio: float = Field(10.0, ge=1)
    min_speakers_per_class: int = Field(2, ge=0)


def load_config(path: str | Path | None, **overrides) -> ValidationConfig:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"validation config {path}: {str(exc).splitlines()[0]}") from exc
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ValidationConfig(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"validation config: {'.'.join(map(str, err['loc']))}: {err['msg']}") from exc


def measure(y: np.ndarray) -> dict:
    """Signal facts of mono float samples ``y``: peak / RMS (dBFS), clip ratio, DC offset, non-finite count."""
    finite = np.isfinite(y)
    n_bad = int((~finite).sum())
    x = y[finite].astype(np.float64)
    if x.size == 0:
        return dict(peak_dbfs=-np.inf, rms_dbfs=-np.inf, clip_ratio=0.0, dc_offset=0.0, nonfinite=n_bad)
    peak = float(np.abs(x).max())
    rms = float(np.sqrt(np.mean(x**2)))
    return dict(
        peak_dbfs=20 * np.log10(max(peak, 1e-12)),
        rms_dbfs=20 * np.log10(max(rms, 1e-12)),
        clip_ratio=float(np.mean(np.abs(x) >= 0.999)),
        dc_offset=float(x.mean()),
        nonfinite=n_bad,
    )


def problems(facts: dict, duration_s: float, sample_rate: int, cfg: ValidationConfig) -> list[str]:
    """Reasons to quarantine a file given its measurements (empty when it passes)."""
    out = []
    if facts["nonfinite"]:
        out.append(f"non-finite samples (NaN or Inf): {facts['nonfinite']}")
    if facts["peak_dbfs"] < cfg.silence_peak_dbfs:
        out.append(f"near-silence: peak {facts['peak_dbfs']:.1f} dBFS < {cfg.silence_peak_dbfs} dBFS")
    if facts["clip_ratio"] > cfg.max_clip_ratio:
        out.append(f"clipping: {100 * facts['clip_ratio']:.2f} % of samples at full scale")
    if abs(facts["dc_offset"]) > cfg.max_dc_offset:
        out.append(f"DC offset {facts['dc_offset']:.3f}")
    if not cfg.min_duration_s <= duration_s <= cfg.max_duration_s:
        out.append(f"duration {duration_s:.2f} s outside [{cfg.min_duration_s}, {cfg.max_duration_s}] s")
    if cfg.allowed_sample_rates and sample_rate not in cfg.allowed_sample_rates:
        out.append(f"sample rate {sample_rate} Hz not allowed")
    return out


@dataclass
class ValidationResult:
    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    report: dict
    failures: list[str] = field(default_factory=list)


def _measure_file(path: str) -> tuple[dict | None, str | None]:
    try:
        y, sr = read_native(path)
    except AudioError as exc:
        return None, str(exc)
    mono = to_mono(y)
    return {**measure(mono), "pcm_hash": pcm_hash(y), "frames": len(mono), "native_sr": sr}, None


def validate(
    manifest: pd.DataFrame,
    config: ValidationConfig | None = None,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> ValidationResult:
    cfg = config or ValidationConfig()
    schema.check(manifest)
    if manifest.empty:
        raise ManifestError("the manifest has no rows: ingest found no audio files (check the corpus path and adapter)")
    m = schema.conform(manifest)
    with ThreadPoolExecutor(max_workers=workers or 4) as pool:
        measured = list(track(pool.map(_measure_file, m["path"]), "validate", len(m), progress))
    facts_cols = ["peak_dbfs", "rms_dbfs", "clip_ratio", "dc_offset", "pcm_hash"]  # columns even if every file fails
    quarantine: list[dict[str, str]] = []
    keep: list[bool] = []
    extra: list[dict[str, Any]] = []
    for (facts, err), row in zip(measured, m.itertuples(index=False), strict=True):
        if err is not None:
            quarantine.append({"path": row.path, "stage": "validate", "reason": err})
            keep.append(False)
            extra.append({})
            continue
        assert facts is not None  # _measure_file gives facts exactly when it gives no error
        duration = facts["frames"] / facts["native_sr"]
        reasons = problems(facts, duration, int(row.sample_rate), cfg)
        if reasons:
            quarantine.append({"path": row.path, "stage": "validate", "reason": "; ".join(reasons)})
        keep.append(not reasons)
        extra.append({k: facts[k] for k in facts_cols})
    m = pd.concat([m, pd.DataFrame(extra, index=m.index, columns=facts_cols)], axis=1)
    ok = m[np.array(keep, dtype=bool)]
    duplicates = []
    for kind, col in (("byte-identical", "sha256"), ("content-identical", "pcm_hash")):
        for key, grp in ok[ok.duplicated(col, keep=False)].groupby(col):
            labels = sorted(grp["emotion"].unique())
            files = grp["path"].tolist()
            duplicates.append(
                {"kind": kind, "hash": key, "files": files, "labels": labels, "label_conflict": len(labels) > 1}
            )
            drop = files if len(labels) > 1 else files[1:]
            why = (
                f"{kind} duplicate with conflicting labels {labels}"
                if len(labels) > 1
                else f"{kind} duplicate of {files[0]}"
            )
            quarantine += [{"path": p, "stage": "validate", "reason": why} for p in drop]
            ok = ok[~ok["path"].isin(drop)]
    report = dataset_report(ok, len(m), duplicates, m)
    report["quarantined"] = len(quarantine)
    q = schema.quarantine_frame(quarantine)
    report["quarantine_reasons"] = {k: int(v) for k, v in q["reason"].str.split(":").str[0].value_counts().items()}
    failures = thresholds(report, cfg)
    report["failures"] = failures
    return ValidationResult(schema.conform(ok), q, report, failures)


def dataset_report(ok: pd.DataFrame, n_checked: int, duplicates: list, measured: pd.DataFrame) -> dict:
    counts = ok["emotion"].value_counts()
    spk_per_label = ok.groupby("emotion")["speaker"].nunique()
    spk_gender = ok.groupby("speaker")["gender"].first().value_counts()
    return {
        "checked": n_checked,
        "passed": len(ok),
        "class_counts": {k: int(v) for k, v in counts.sort_index().items()},
        "imbalance_ratio": float(counts.max() / counts.min()) if len(counts) else None,
        "speakers_per_label": {k: int(v) for k, v in spk_per_label.items()},
        "speakers_by_gender": {k: int(v) for k, v in spk_gender.items()},
        "utterances_by_gender": {k: int(v) for k, v in ok["gender"].value_counts().items()},
        "utterances_per_speaker": {k: int(v) for k, v in ok["speaker"].value_counts().sort_index().items()},
        "sample_rates": {str(k): int(v) for k, v in measured["sample_rate"].value_counts().items()},
        "channels": {str(k): int(v) for k, v in measured["channels"].value_counts().items()},
        "duplicates": duplicates,
    }


def thresholds(report: dict, cfg: ValidationConfig) -> list[str]:
    out = []
    frac = report["quarantined"] / max(report["checked"], 1)
    if frac > cfg.max_quarantined_fraction:
        out.append(f"quarantined fraction {frac:.3f} > {cfg.max_quarantined_fraction}")
    for label, n in report["class_counts"].items():
        if n < cfg.min_files_per_class:
            out.append(f"class {label} has {n} files < {cfg.min_files_per_class}")
    if report["imbalance_ratio"] and report["imbalance_ratio"] > cfg.max_imbalance_ratio:
        out.append(f"class imbalance ratio {report['imbalance_ratio']:.1f} > {cfg.max_imbalance_ratio}")
    for label, n in report["speakers_per_label"].items():
        if n < cfg.min_speakers_per_class:
            out.append(f"class {label} has {n} speakers < {cfg.min_speakers_per_class}")
    return out


def _bar(path: Path, data: dict, title: str, xlabel: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5, 0.35 * len(data) + 2), 3.5))
    ax = fig.subplots()
    ax.bar(list(map(str, data)), list(data.values()), color="#4c72b0")
    ax.set_title(title)
    ax.set_ylabel("count")
    ax.set_xlabel(xlabel)
    ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_outputs(result: ValidationResult, out_dir: str | Path) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(out / "manifest.parquet", result.manifest)
    write_parquet(out / "quarantine.parquet", result.quarantine)
    write_json(out / "report.json", result.report)
    r = result.report
    plots = {
        "classes.png": (r["class_counts"], "utterances per class", "emotion"),
        "speakers.png": (r["utterances_per_speaker"], "utterances per speaker", "speaker"),
        "gender.png": (r["utterances_by_gender"], "utterances per gender", "gender"),
    }
    for name, (data, title, xlabel) in plots.items():
        if data:
            _bar(out / name, data, title, xlabel)
    lines = [
        "# Validation report",
        "",
        f"Checked {r['checked']} files: {r['passed']} passed, {r['quarantined']} quarantined.",
        "",
        "## Quarantine reasons",
        "",
        *[f"- {k}: {v}" for k, v in r["quarantine_reasons"].items()],
        "",
        "## Duplicates",
        "",
        *[
            f"- {d['kind']}{' (LABEL CONFLICT)' if d['label_conflict'] else ''}: "
            + ", ".join(Path(f).name for f in d["files"])
            for d in r["duplicates"]
        ],
        "",
        "## Classes",
        "",
        "![classes](classes.png)",
        "",
        "| class | files | speakers |",
        "|---|---|---|",
        *[f"| {k} | {v} | {r['speakers_per_label'].get(k, 0)} |" for k, v in r["class_counts"].items()],
        "",
        f"Imbalance ratio (largest / smallest class): {r['imbalance_ratio']}",
        "",
        "## Speakers and gender",
        "",
        "![speakers](speakers.png)",
        "",
        "![gender](gender.png)",
        "",
        f"Speakers by gender: {r['speakers_by_gender']}",
        "",
        "## Threshold failures",
        "",
        *([f"- {f}" for f in r["failures"]] or ["none"]),
        "",
    ]
    write_text(out / "report.md", "\n".join(lines))
