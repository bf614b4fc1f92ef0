"""The pipeline configuration: one YAML file, validated with pydantic; a bad value names its field.

Every section has defaults, so an empty file (or none) runs the embedded default: the synthetic demo corpus, a
small CNN, 3 speaker-independent folds, tracking in ``WORKDIR/mlflow.db``. Example for real data::

    data: {corpus: ravdess, path: ../shared/data/ravdess, profile: ravdess8}
    split: {method: ravdess6}
    train: {model: cnn}

Several data sources in one run (``data.sources``; the single-source form above is one source)::

    data:
      profile: ravdess8
      sources:
        - {name: ravdess, corpus: ravdess, path: ../shared/data/ravdess}
        - {name: calls-2026-12, corpus: csv, path: calls.csv, gate_share: 0.3}       # a NEW source: 30 % of its
        - {name: feedback, corpus: feedback, log: runs/monitor, path: clips/, gate_share: 0.3}  # speakers gate
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ser.errors import ConfigError, validation_reason


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


_SOURCE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class SourceConfig(_Section):
    """One data source: a corpus adapter over a folder or CSV manifest, the synthetic corpus, or ``feedback``
    (labels from the prediction log's feedback joined by PCM hash to the audio clips in ``path``)."""

    name: str | None = Field(
        None, pattern=_SOURCE_NAME, description="source name (default: the corpus); prefixes its ids"
    )
    corpus: str = Field(
        "synthetic", description="adapter: synthetic, ravdess, cremad, tess, savee, emodb, folder, csv, feedback"
    )
    path: str | None = Field(
        None,
        description="corpus folder (csv: the file; feedback: the folder of audio clips); a URI with a scheme is "
        "fetched by fsspec",
    )
    log: str | None = Field(None, description="feedback: the prediction log root (holding predictions/, feedback/)")
    demographics: str | None = Field(None, description="CREMA-D VideoDemographics.csv")
    synth_speakers: int = Field(8, ge=2, description="synthetic corpus: speakers")
    synth_per_emotion: int = Field(4, ge=1, description="synthetic corpus: clips per emotion and speaker")
    seed: int = 0
    gate_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of this source's speakers set aside (before splitting and training) as the promotion "
        "gate set; > 0 marks a NEW source",
    )

    @model_validator(mode="after")
    def _path_needed(self) -> SourceConfig:
        if self.corpus != "synthetic" and not self.path:
            raise ValueError(f"corpus {self.corpus!r} needs a path")
        if self.corpus == "feedback" and not self.log:
            raise ValueError("a feedback source needs log (the prediction log root)")
        return self

    @property
    def label(self) -> str:
        """The source's name: ``name``, else the corpus."""
        return self.name or self.corpus


_SINGLE_SOURCE_FIELDS = {"corpus", "path", "demographics", "synth_speakers", "synth_per_emotion", "seed"}
"""The fields of the single-source ``data:`` form: one :class:`SourceConfig` with the same names."""


class DataConfig(_Section):
    corpus: str = Field("synthetic", description="adapter: synthetic, ravdess, cremad, tess, savee, emodb, folder, csv")
    path: str | None = Field(
        None, description="corpus folder (csv: the file); a URI with a scheme is fetched by fsspec"
    )
    profile: str = Field("ravdess8", description="label profile (ravdess8, seven, four) or a YAML file")
    demographics: str | None = Field(None, description="CREMA-D VideoDemographics.csv")
    synth_speakers: int = Field(8, ge=2, description="synthetic corpus: speakers")
    synth_per_emotion: int = Field(4, ge=1, description="synthetic corpus: clips per emotion and speaker")
    seed: int = 0
    sources: list[SourceConfig] | None = Field(
        None, min_length=1, description="several sources in one manifest (instead of corpus/path above)"
    )

    @model_validator(mode="after")
    def _path_needed(self) -> DataConfig:
        if self.sources is not None:
            given_single = _SINGLE_SOURCE_FIELDS & self.model_fields_set
            if given_single:
                given = ", ".join(sorted(given_single))
                raise ValueError(f"give either sources or the single-source fields ({given}), not both")
            names = [s.label for s in self.sources]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"source names must be unique ({', '.join(dup)} repeats); set name")
            return self
        if self.corpus != "synthetic" and not self.path:
            raise ValueError(f"corpus {self.corpus!r} needs data.path")
        if self.corpus == "feedback":
            raise ValueError("a feedback source needs data.sources (with log and path)")
        return self

    def all_sources(self) -> list[SourceConfig]:
        """Every source: ``sources``, or the single-source form as one source."""
        if self.sources is not None:
            return list(self.sources)
        return [SourceConfig(**self.model_dump(include=_SINGLE_SOURCE_FIELDS))]

    @property
    def synthetic(self) -> bool:
        """Every source is the synthetic demo corpus."""
        return all(s.corpus == "synthetic" for s in self.all_sources())


class ValidateConfig(_Section):
    thresholds: dict[str, Any] = Field(default_factory=dict, description="ValidationConfig fields")
    fail_on_thresholds: bool = Field(True, description="stop the pipeline when a dataset threshold is crossed")


class SplitConfig(_Section):
    method: Literal["kfold", "loso", "holdout", "ravdess6"] = "kfold"
    k: int = Field(3, ge=2)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    folds: list[int] | None = Field(None, description="cross-validate only these folds (default: all)")


class TuneConfig(_Section):
    enabled: bool = False
    trials: int = Field(10, ge=1)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "halving", "none"] = "median"
    fold: int = Field(0, ge=0)
    space: dict[str, Any] = Field(default_factory=dict, description="search space (see ser.train.tune_space)")


class TrainSection(_Section):
    model: str | None = Field(
        None,
        description="recipe: cnn, cnn-small, tdnn, rnn, crnn (default: cnn; cnn-small on the synthetic demo corpus)",
    )
    overrides: dict[str, Any] = Field(default_factory=dict, description="recipe fields: params, train, augment, ...")
    seed: int = 0
    threads: int = Field(2, ge=1, description="torch CPU threads (executor ray: per task, the CPUs Ray reserves)")
    executor: Literal["local", "ray"] = Field(
        "local", description="where folds, ensemble members, tuning trials and features run: local or ray (tasks)"
    )
    ray_address: str = Field(
        "local", min_length=1, description="executor ray: local (start Ray here), auto (running cluster), HOST:PORT"
    )
    noise_dir: str | None = Field(
        None,
        description="the noise recordings a robust recipe's training variants mix in (relative to the config file); "
        "unset: $SER_NOISE_DIR",
    )


class EvaluateConfig(_Section):
    n_boot: int = Field(1000, ge=0, description="bootstrap resamples for the 95 % CIs (0: none)")


class RegisterConfig(_Section):
    margin: float = Field(0.0, ge=0, description="UAR a challenger must gain over the champion to replace it")
    max_group_gap: float | None = Field(0.25, ge=0, le=1, description="largest per-group UAR gap allowed")
    group: str = Field("gender", description="group attribute whose gap is bounded")
    on_missing_group: Literal["block", "allow"] = Field(
        "allow",
        description="when the group gap cannot be computed (fewer than two groups large enough): block the "
        "promotion or allow it (recorded either way)",
    )
    rule: Literal["ci", "point"] = Field(
        "ci",
        description="on a gate set: ci = the lower end of the 95 % speaker-bootstrap CI of the UAR difference must "
        "reach margin; point = the difference itself must",
    )
    gate_seed: int = Field(0, description="seed of the gate speakers drawn from sources with gate_share")
    min_gate_utterances: int = Field(
        20, ge=1, description="fewest gate utterances neither model saw; fewer blocks the promotion"
    )
    n_boot: int = Field(1000, ge=1, description="speaker-bootstrap resamples for the gate's CIs")
    publish: str | None = Field(
        None, description="also copy each registered version to this location (path or URI: s3://, gs://, ...)"
    )


class TrackingConfig(_Section):
    enabled: bool = True
    uri: str | None = Field(None, description="MLflow tracking URI (default sqlite:///WORKDIR/mlflow.db)")
    experiment: str = "ser"


class PipelineConfig(_Section):
    name: str = Field("ser-emotion", description="registered model name")
    data: DataConfig = Field(default_factory=DataConfig)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    split: SplitConfig = Field(default_factory=SplitConfig)
    features: dict[str, Any] = Field(default_factory=dict, description="FeatureConfig fields")
    tune: TuneConfig = Field(default_factory=TuneConfig)
    train: TrainSection = Field(default_factory=TrainSection)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    register_: RegisterConfig = Field(default_factory=RegisterConfig, alias="register")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    workers: int = Field(2, ge=1, description="processes for ingest / validation / features")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _default_model(self) -> PipelineConfig:
        if self.train.model is None:
            self.train.model = "cnn-small" if self.data.synthetic else "cnn"
        return self

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def config_hash(obj: Any) -> str:
    """Stable short hash of a JSON-able value."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_config(data: dict[str, Any] | None, source: str = "config") -> PipelineConfig:
    """Validate a mapping; a problem raises :class:`ConfigError` naming the field, e.g. ``train.threads``."""
    try:
        return PipelineConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {validation_reason(exc)}") from None


def load_config(path: str | Path | None) -> PipelineConfig:
    """The config in a YAML file, or the embedded default when ``path`` is None."""
    if path is None:
        return parse_config({})
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"pipeline config not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections (data, split, train, ...)")
    cfg = parse_config(data, str(p))
    # relative corpus and noise paths are relative to the config file
    data_update: dict[str, Any] = {}
    if _relative(cfg.data.path):
        data_update["path"] = _resolve(p, cfg.data.path)
    if cfg.data.sources is not None:
        data_update["sources"] = [
            s.model_copy(update={k: _resolve(p, getattr(s, k)) for k in ("path", "log") if _relative(getattr(s, k))})
            for s in cfg.data.sources
        ]
    if data_update:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=data_update)})
    if _relative(cfg.train.noise_dir):
        cfg = cfg.model_copy(
            update={"train": cfg.train.model_copy(update={"noise_dir": _resolve(p, cfg.train.noise_dir)})}
        )
    return cfg


def _relative(path: str | None) -> bool:
    return bool(path) and "://" not in str(path) and not Path(str(path)).is_absolute()


def _resolve(config_file: Path, path: str | None) -> str:
    return str((config_file.parent / str(path)).resolve())
