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
class FeedbackIngestJob:
    """Feedback labels in the prediction log under ``log`` joined by PCM hash to the clips in ``audio`` →
    ``out/feedback.csv`` (path, label, speaker, group) → ``out/manifest.parquet`` through the ``csv`` corpus adapter
    (so labels map into the unified vocabulary as any corpus). Its ``corpus`` column is ``feedback``."""

    log: str | Path
    audio: Path
    out: Path
    workers: int = 4
    progress: bool = False

    def run(self) -> IngestOutcome:
        from ser.data.ingest import IngestResult, summarize
        from ser.data.schema import conform, quarantine_frame
        from ser.monitor.feedback import labelled_clips

        clips = labelled_clips(self.log, self.audio, workers=self.workers)
        if not clips.rows:
            raise SerError(
                f"feedback source: no feedback label in {self.log} matches a clip in {self.audio} ({clips.summary()})"
            )
        csv = self.out / "feedback.csv"
        csv.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(clips.rows)[["path", "label", "speaker", "group"]].to_csv(csv, index=False)
        res = IngestJob("csv", csv, self.out, workers=self.workers, progress=self.progress).run()
        manifest = conform(res.result.manifest.assign(corpus="feedback"))
        quarantine = pd.concat(
            [
                res.result.quarantine,
                quarantine_frame([{"path": p, "stage": "ingest", "reason": r} for p, r in clips.undecodable]),
            ],
            ignore_index=True,
        )
        write_parquet(res.manifest, manifest)
        write_parquet(res.quarantine, quarantine)
        result = IngestResult(manifest, quarantine, res.result.dropped, False, "feedback")
        summary = {**summarize(manifest), **clips.summary(), "manifest": str(res.manifest)}
        return IngestOutcome(result, summary, res.manifest, res.quarantine)


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
    gate: pd.DataFrame | None = None
    """The promotion gate set (``gate_shares``): rows set aside before the split, never in ``manifest``."""
    gate_path: Path | None = None

    def per_fold(self) -> pd.DataFrame:
        """Utterances and speakers per (fold, role)."""
        return self.splits.groupby(["fold", "role"]).agg(utterances=("utt_id", "size"), speakers=("speaker", "nunique"))


@dataclass(frozen=True)
class SplitJob:
    """A manifest → ``out/splits.parquet`` (long format: fold, utt_id, speaker, role), leakage-guarded.

    ``profile``: a label profile applied first (its manifest is then written beside the splits, and fewer than two
    classes left is an error); ``None`` splits the manifest as it is. ``method``: ravdess6, kfold, loso or holdout.
    ``gate_shares``: ``{source: share}`` of speakers set aside first as the promotion gate set
    (:func:`ser.data.split.gate_holdout`, ``out/gate.parquet``); the splits and ``manifest`` never hold them.
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
    gate_shares: dict[str, float] = field(default_factory=dict)
    gate_seed: int = 0

    def run(self) -> SplitOutcome:
        from ser.data.labels import apply_profile
        from ser.data.schema import read_manifest
        from ser.data.split import check_leakage, make_splits

        frame = self.manifest if isinstance(self.manifest, pd.DataFrame) else read_manifest(self.manifest)
        dropped: Any = {}
        manifest_path = gate_path = None
        gate = None
        if any(v > 0 for v in self.gate_shares.values()):
            from ser.data.split import gate_holdout

            frame, gate = gate_holdout(frame, self.gate_shares, self.gate_seed)
            if self.profile is not None:
                gate, _ = apply_profile(gate, self.profile)
            gate_path = self.out / "gate.parquet"
            write_parquet(gate_path, gate)
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
            frame,
            splits,
            self.out / "splits.parquet",
            manifest_path,
            classes,
            dropped,
            manifest_fingerprint(frame),
            gate,
            gate_path,
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


def source_fingerprints(manifest: pd.DataFrame) -> dict[str, str]:
    """``{source: fingerprint of its rows}`` (:func:`manifest_fingerprint`); a manifest without a ``source``
    column is one source ``""``."""
    if "source" not in manifest.columns:
        return {"": manifest_fingerprint(manifest)}
    return {str(k): manifest_fingerprint(g) for k, g in manifest.groupby("source", sort=True)}


def data_version(fingerprints: dict[str, str]) -> str:
    """One version of the data of a run: a hash of every source's name and content fingerprint."""
    text = "\n".join(f"{k}\0{v}" for k, v in sorted(fingerprints.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
