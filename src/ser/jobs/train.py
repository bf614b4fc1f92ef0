"""Training jobs: a recipe's members → speaker-independent cross-validation → fused fold predictions → the model
that ships (trained on every speaker); and cross-corpus training.

Used by ``ser train``, ``ser cross-corpus`` and the pipeline's ``train`` stage. Fold predictions are saved as
they finish (``<out>/<name>/fold_k``), so a killed run resumes at the first unfinished fold; an ensemble's fused
folds are saved under its own name, so they read back like any model's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ser.errors import ConfigError
from ser.executor import Executor

FoldLog = Callable[[str, int, Any], None]
"""``log(model_name, fold, fold_output)``, called as each fold finishes."""


def load_run_inputs(manifest: Path, splits: Path, profile: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str], Any]:
    """``(manifest, splits, classes, dropped)``: the manifest under a label profile, the splits of its utterances,
    the classes present (profile order). Fewer than two classes is a :class:`~ser.errors.ConfigError`."""
    from ser.data.labels import apply_profile
    from ser.data.schema import read_manifest
    from ser.jobs.data import present_classes

    frame, dropped = apply_profile(read_manifest(manifest), profile)
    classes = present_classes(frame, profile)
    if len(classes) < 2:
        raise ConfigError(f"profile {profile!r} leaves fewer than two classes in the manifest")
    split_frame = pd.read_parquet(splits)
    split_frame = split_frame[split_frame["utt_id"].isin(set(frame["utt_id"]))]
    return frame, split_frame, classes, dropped


def member_specs(spec: Any) -> list[Any]:
    """The model specs that train for ``spec``: itself, or an ensemble's members."""
    from ser.train.recipes import members

    return members([spec])


def feature_kinds(spec: Any) -> tuple[str, ...]:
    """Frame-feature kinds ``spec`` needs (log-mel always: the silence trim reads it; ``vad`` for a ``vad`` trim,
    :func:`ser.model_folder.trim_kinds`; a distilled recipe's teacher members' too), sorted."""
    from ser.train.recipes import feature_kinds as kinds_of

    return tuple(sorted({"logmel"} | kinds_of(member_specs(spec))))


@dataclass(frozen=True)
class FeatureSource:
    """Where frame features come from: the per-kind cache and its configuration (``None``: the defaults), and
    the noise recordings robustness variants mix in (``None``: ``$SER_NOISE_DIR``)."""

    cache_dir: Path
    feature_cfg: Any = None
    workers: int | None = 2
    progress: bool = False
    noise_dir: Path | None = None

    def variants(self, spec: Any) -> Any:
        """The :class:`~ser.train.robust.VariantSource` of a model spec with a ``robust`` field (cached beside the
        features), or None."""
        from ser.model_folder import trim_kinds
        from ser.train.robust import VariantSource, make_robust_config

        if getattr(spec, "robust", None) is None:
            return None
        return VariantSource(
            make_robust_config(spec.robust),
            kinds=(spec.features, *trim_kinds(spec.trim)),
            feature_cfg=self.feature_cfg,
            cache_dir=self.cache_dir,
            noise_dir=self.noise_dir,
            workers=self.workers or 1,
            progress=self.progress,
        )

    executor: Executor | None = None
    """``ray``: files are extracted as Ray tasks (one CPU each) instead of ``workers`` local processes."""

    def load(self, manifest: pd.DataFrame, kinds: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        from ser.train.cv import load_frame_features

        return load_frame_features(
            manifest,
            kinds,
            feature_cfg=self.feature_cfg,
            cache_dir=self.cache_dir,
            workers=self.workers,
            progress=self.progress,
            executor=self.executor,
        )


@dataclass
class CVOutcome:
    """Fold outputs per member and the recipe's own (an ensemble's fused folds), in fold order; ``features``: where
    they came from (the model that ships takes its robustness variants from there too)."""

    spec: Any
    members: dict[str, list[Any]]
    outputs: list[Any]
    feats: dict[str, dict[str, Any]]
    features: FeatureSource | None = None


@dataclass(frozen=True)
class CrossValidateJob:
    """Cross-validate a recipe speaker-independently: each member, then (for an ensemble) fuse and save.

    ``out``: the run folder of fold predictions and checkpoints; ``folds``: indices to run (default all);
    ``executor``: where the folds of every member train (:class:`~ser.executor.Executor`; default here, one after
    another).
    """

    manifest: pd.DataFrame
    splits: pd.DataFrame
    spec: Any  # ModelSpec | EnsembleSpec
    classes: list[str]
    out: Path
    features: FeatureSource
    folds: list[int] | None = None
    seed: int = 0
    log: FoldLog | None = None
    executor: Executor | None = None

    def run(self) -> CVOutcome:
        from ser.train.cv import cross_validate_members, ensemble_folds, save_fold
        from ser.train.spec import EnsembleSpec

        specs = member_specs(self.spec)
        feats = self.features.load(self.manifest, feature_kinds(self.spec))
        outs = cross_validate_members(
            self.manifest,
            self.splits,
            specs,
            feats,
            self.classes,
            self.out,
            folds=self.folds,
            seed=self.seed,
            log=self.log,
            executor=self.executor,
            variants_for=self.features.variants,
        )
        if not isinstance(self.spec, EnsembleSpec):
            return CVOutcome(self.spec, outs, outs[self.spec.name], feats, self.features)
        fused = ensemble_folds([outs[m] for m in self.spec.members], self.spec.weights)
        for k, out in zip(self.folds or list(range(len(fused))), fused, strict=True):
            save_fold(self.out, self.spec.name, k, out)
        return CVOutcome(self.spec, outs, fused, feats, self.features)


@dataclass(frozen=True)
class ShipJob:
    """Train the model that ships on every speaker of ``manifest`` (each member of an ensemble, joined into one
    module) and save it to ``model_path`` with its classes and recipe. Resumes from ``ckpt_dir``; ``executor``
    as :class:`CrossValidateJob`."""

    spec: Any
    manifest: pd.DataFrame
    feats: dict[str, dict[str, Any]]
    classes: list[str]
    model_path: Path
    ckpt_dir: Path
    seed: int = 0
    features: FeatureSource | None = None  # robustness variants of a ``robust`` recipe come from here
    executor: Executor | None = None

    def run(self) -> dict[str, Any]:
        """Facts about the final training (``info`` of :func:`ser.train.cv.fit_shipped`) plus a one-line metric."""
        from ser.models.factory import save_model
        from ser.train.cv import fit_shipped
        from ser.train.spec import EnsembleSpec

        specs = member_specs(self.spec)
        model, info = fit_shipped(
            self.spec,
            specs,
            self.manifest,
            self.feats,
            self.classes,
            seed=self.seed,
            out_dir=self.ckpt_dir,
            variants_for=None if self.features is None else self.features.variants,
            executor=self.executor,
        )
        save_model(self.model_path, model, {"classes": self.classes, "recipe": self.spec.model_dump(mode="json")})
        if info["best_val_uar"] is None:
            metric = f"final model: {info['n_train']} clips, last of {info['epochs_run']} epochs (no validation)"
        else:
            metric = f"final model: best val UAR {info['best_val_uar']:.3f} at epoch {info['best_epoch']}"
        if isinstance(self.spec, EnsembleSpec):
            metric = f"{len(specs)}-member ensemble; " + metric
        return {**info, "metric": metric}


@dataclass(frozen=True)
class CrossCorpusJob:
    """Train on one corpus, test on another through a shared label profile (see :mod:`ser.train.crosscorpus`)."""

    train_manifest: pd.DataFrame
    test_manifest: pd.DataFrame
    spec: Any
    profile: str
    out: Path
    features: FeatureSource
    normalize: str = "corpus"
    seed: int = 0

    def run(self) -> dict[str, Any]:
        from ser.train.crosscorpus import cross_corpus

        return cross_corpus(
            self.train_manifest,
            self.test_manifest,
            self.spec,
            profile=self.profile,
            out_dir=self.out,
            cache_dir=self.features.cache_dir,
            workers=self.features.workers,
            seed=self.seed,
            normalize=self.normalize,
            progress=self.features.progress,
        )
