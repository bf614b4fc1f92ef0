"""Data jobs: a corpus → manifest (ingest) → validated manifest (validate) → speaker-independent splits (split).

Used by ``ser data ingest|validate|split``, ``ser demo`` and the pipeline's ``ingest``, ``validate`` and ``split``
stages.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ser.errors import SerError
from ser.io import write_parquet


@dataclass(frozen=True)
class IngestOutcome:
    result: Any  # ser.data.ingest.IngestResult
    summary: dict[str, Any]
    manifest: Path
    quarantine: Path


@dataclass(frozen=True)
class IngestJob:
    """A corpus folder (or CSV manifest) → ``out/manifest.parquet`` and ``out/quarantine.parquet``."""

    corpus: str
    path: str | Path
    out: Path
    profile: str = "unified"
    demographics: Path | None = None
    workers: int = 4
    progress: bool = False

    def run(self) -> IngestOutcome:
        from ser.data.ingest import ingest, summarize, write_outputs

        res = ingest(
            self.corpus,
            self.path,
            profile=self.profile,
            demographics=self.demographics,
            workers=self.workers,
            progress=self.progress,
        )
        write_outputs(res, self.out)
        summary = {**summarize(res), "manifest": str(self.out / "manifest.parquet")}
        return IngestOutcome(res, summary, self.out / "manifest.parquet", self.out / "quarantine.parquet")


@dataclass(frozen=True)
class ValidateOutcome:
    result: Any  # ser.data.validate.ValidationResult
    manifest: Path
    quarantine: Path
    report: Path

    @property
    def failures(self) -> list[str]:
        return list(self.result.failures)


@dataclass(frozen=True)
class ValidateJob:
    """A manifest → validated ``out/manifest.parquet``, ``quarantine.parquet``, ``report.json`` / ``report.md``.

    ``thresholds``: :class:`~ser.data.validate.ValidationConfig` fields (``None`` values keep the defaults);
    ``config``: a YAML of them, read first. Threshold failures are returned, not raised: the caller decides.
    """

    manifest: pd.DataFrame | Path
    out: Path
    config: Path | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)
    workers: int = 4
    progress: bool = False

    def run(self) -> ValidateOutcome:
        from ser.data.schema import read_manifest
        from ser.data.validate import load_config, validate, write_outputs

        cfg = load_config(self.config, **self.thresholds)
        frame = self.manifest if isinstance(self.manifest, pd.DataFrame) else read_manifest(self.manifest)
        res = validate(frame, cfg, workers=self.workers, progress=self.progress)
        write_outputs(res, self.out)
        o = self.out
        return ValidateOutcome(res, o / "manifest.parquet", o / "quarantine.parquet", o / "report.json")


@dataclass(frozen=True)
class SplitOutcome:
    manifest: pd.DataFrame
    splits: pd.DataFrame
    splits_path: Path
    manifest_path: Path | None
    classes: list[str]
    dropped_labels: Any
    fingerprint: str

    def per_fold(self) -> pd.DataFrame:
        """Utterances and speakers per (fold, role)."""
        return self.splits.groupby(["fold", "role"]).agg(utterances=("utt_id", "size"), speakers=("speaker", "nunique"))


@dataclass(frozen=True)
class SplitJob:
    """A manifest → ``out/splits.parquet`` (long format: fold, utt_id, speaker, role), leakage-guarded.

    ``profile``: a label profile applied first (its manifest is then written beside the splits, and fewer than two
    classes left is an error); ``None`` splits the manifest as it is. ``method``: ravdess6, kfold, loso or holdout.
    """

    manifest: pd.DataFrame | Path
    out: Path
    method: str = "kfold"
    k: int = 5
    seed: int = 0
    test_speakers: list[str] | None = None
    test_fraction: float = 0.2
    val_speakers: int = 0
    profile: str | None = None

    def run(self) -> SplitOutcome:
        from ser.data.labels import apply_profile
        from ser.data.schema import read_manifest
        from ser.data.split import check_leakage, make_splits

        frame = self.manifest if isinstance(self.manifest, pd.DataFrame) else read_manifest(self.manifest)
        dropped: Any = {}
        manifest_path = None
        if self.profile is not None:
            frame, dropped = apply_profile(frame, self.profile)
            classes = present_classes(frame, self.profile)
            if len(classes) < 2:
                raise SerError(f"profile {self.profile!r} leaves fewer than two classes")
        else:
            classes = sorted(frame["emotion"].astype(str).unique())
        splits = make_splits(
            frame,
            self.method,
            k=self.k,
            seed=self.seed,
            test_speakers=self.test_speakers,
            test_fraction=self.test_fraction,
            val_speakers=self.val_speakers,
        )
        check_leakage(splits)
        if self.profile is not None:
            manifest_path = self.out / "manifest.parquet"
            write_parquet(manifest_path, frame)
        write_parquet(self.out / "splits.parquet", splits)
        return SplitOutcome(
            frame, splits, self.out / "splits.parquet", manifest_path, classes, dropped, manifest_fingerprint(frame)
        )


def present_classes(manifest: pd.DataFrame, profile: str) -> list[str]:
    """The profile's classes that occur in ``manifest``, in the profile's order (the models' class order)."""
    from ser.data.labels import get_profile

    present = set(manifest["emotion"].astype(str))
    return [c for c in get_profile(profile).classes if c in present]


def manifest_fingerprint(manifest: pd.DataFrame) -> str:
    """Hash of the rows a model is trained and evaluated on (utterance, content hash, label, speaker)."""
    cols = [c for c in ("utt_id", "sha256", "emotion", "speaker") if c in manifest.columns]
    rows = manifest[cols].astype(str).sort_values(cols).to_csv(index=False)
    return hashlib.sha256(rows.encode()).hexdigest()[:16]
