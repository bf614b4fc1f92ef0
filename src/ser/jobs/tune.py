"""The tuning job: an Optuna study on validation speakers carved out of one training fold (the fold's test
speakers are never loaded), resumable from its SQLite storage; writes ``best_params.json``, ``best_config.yaml``,
``trials.csv`` and ``optimization_history.png``.

Used by ``ser tune`` and the pipeline's ``tune`` stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ser.errors import ConfigError
from ser.executor import Executor
from ser.jobs.train import FeatureSource

Log = Callable[[str], None]


@dataclass(frozen=True)
class TuneSettings:
    """What to tune and how: one model recipe ``spec`` (an ensemble is refused), its ``space`` and the study."""

    spec: Any  # ModelSpec
    space: Mapping[str, Any]
    trials: int | None = None
    sampler: str = "tpe"
    pruner: Any = "median"
    fold: int = 0
    storage: Path | None = None
    study_name: str | None = None
    val_speakers: int | None = None
    seed: int = 0
    timeout: float | None = None

    @property
    def name(self) -> str:
        return self.study_name or f"{self.spec.name}-fold{self.fold}"

    def check(self) -> None:
        """Fail on bad settings before any feature is extracted (the study itself checks them again)."""
        from ser.train.spec import ModelSpec
        from ser.train.tune_space import grid_space, parse_space

        if not isinstance(self.spec, ModelSpec):
            raise ConfigError(
                f"{self.spec.name} is an ensemble, not an ensemble member: tune its members one at a time"
            )
        params = parse_space(self.space, self.spec)
        if self.sampler == "grid":
            grid_space(params)


@dataclass(frozen=True)
class TuneOutcome:
    result: Any  # ser.train.tune.TuneResult
    outputs: dict[str, Path]
    train_speakers: int
    val_speakers: list[str]


@dataclass(frozen=True)
class TuneJob:
    """Run (or resume) the study of ``settings`` on ``manifest`` / ``splits`` and write its outputs to ``out``
    (the study in ``out/study.db`` unless ``settings.storage`` says otherwise). ``executor``: where the trials
    run (:class:`~ser.executor.Executor`; on Ray, in parallel against the study's SQLite storage)."""

    manifest: pd.DataFrame
    splits: pd.DataFrame
    classes: list[str]
    out: Path
    features: FeatureSource
    settings: TuneSettings
    executor: Executor | None = None

    def run(self, log: Log | None = None, on_start: Log | None = None) -> TuneOutcome:
        """``on_start(line)`` once the fold's roles are known; ``log(line)`` per finished trial."""
        from ser.train.tune import tune, write_outputs
        from ser.train.tune_objective import tuning_roles, tuning_val_speakers

        s = self.settings
        s.check()
        n_val = tuning_val_speakers(s.spec, s.val_speakers)
        roles = tuning_roles(self.manifest, self.splits, s.fold, n_val, s.seed)
        storage = s.storage or self.out / "study.db"
        val = sorted(map(str, roles["val"]["speaker"].unique()))
        n_train = int(roles["train"]["speaker"].nunique())
        if on_start is not None:
            on_start(
                f"tuning {s.spec.name} on fold {s.fold}: {n_train} training speakers, "
                f"validation speakers {', '.join(val)}; study {s.name!r} in {storage}"
            )
        seen = set(roles["train"]["utt_id"]) | set(roles["val"]["utt_id"])
        feats = self.features.load(self.manifest[self.manifest["utt_id"].isin(seen)], ("logmel", s.spec.features))
        result = tune(
            self.manifest,
            self.splits,
            s.spec,
            feats,
            self.classes,
            fold=s.fold,
            space=s.space,
            n_trials=s.trials,
            sampler=s.sampler,
            pruner=s.pruner,
            storage=storage,
            study_name=s.name,
            val_speakers=n_val,
            seed=s.seed,
            timeout=s.timeout,
            log=log,
            executor=self.executor,
        )
        return TuneOutcome(result, write_outputs(result, self.out), n_train, val)
