"""Recipes as data: :class:`ModelSpec` (one model: features, model, training; with a :class:`DistilConfig`, trained
towards a teacher recipe's outputs) and :class:`EnsembleSpec` (late fusion of model specs), with what a spec decides
before any training: its fingerprint (which saved folds still count), its :class:`~ser.train.trainer.TrainConfig`,
how its model evaluates a clip, and the input of the model that ships for a list of member specs. Named recipes are
in :mod:`ser.train.recipes`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ser.errors import ConfigError

if TYPE_CHECKING:
    from ser.train.trainer import TrainConfig

FrameKind = Literal["logmel", "mfcc"]


DISTIL_ALPHA = 0.7
"""Default weight of the teacher term. Hinton et al. (2015) found a considerably lower weight on the hard labels
worked best; the teacher here (``cnn+crnn+rnn``) is 4.4 points of UAR above its cnn student on RAVDESS, so most of
the signal should come from it, while 0.3 on the hard labels keeps the student anchored to the labels where the
teacher's outputs on its own training clips are wrong or flat."""
DISTIL_TEMPERATURE = 3.0
"""Default temperature. The teacher's targets are its outputs on the clips it was trained on, so they are close to
one-hot (a member with label smoothing 0.1 still puts ~0.9 on the label): at T = 3 a clip whose label gets 0.95
and the other seven classes 0.007 each becomes ~0.42 / ~0.08 each, which exposes how the teacher ranks the wrong
classes (its "dark knowledge"). Above ~4 the eight classes flatten towards uniform and the ranking is lost in the
noise of a 1 000-clip training set; 2-4 is the usual range for so few classes."""


class DistilConfig(BaseModel):
    """The ``distil`` part of a model recipe: train the model (the student) towards a teacher recipe's softened
    outputs as well as the hard labels (knowledge distillation, Hinton et al., 2015; the loss is
    :func:`ser.train.distil.distillation_loss`).

    The teacher is trained on exactly the student's training rows (per cross-validation fold, and for the model that
    ships), the student's validation rows used for its early stopping; its outputs on those training rows are the
    soft targets. Only the student ships."""

    model_config = ConfigDict(extra="forbid")

    teacher: str = Field(description="recipe name of the teacher (a model or an ensemble recipe)")
    alpha: float = Field(DISTIL_ALPHA, ge=0, le=1, description="weight of the teacher term (1 - alpha: hard labels)")
    temperature: float = Field(DISTIL_TEMPERATURE, gt=0, description="softmax temperature T of both sides")
    teacher_overrides: dict[str, Any] = Field(
        default_factory=dict, description="recipe overrides for the teacher (an ensemble passes them to members)"
    )
    cross_fit: int = Field(
        0,
        ge=0,
        description="0: the teacher soft-labels the training rows it trained on; k >= 2: out-of-fold targets, the "
        "training speakers dealt into k groups and each group's rows labelled by a teacher trained on the others "
        "(k teachers, each on (k - 1) / k of the rows; ser.train.distil.fit_teacher)",
    )

    @field_validator("cross_fit")
    @classmethod
    def _cross_fit_groups(cls, v: int) -> int:
        if v == 1:
            raise ValueError("distil cross_fit is 0 (in-sample targets) or the number of speaker groups, at least 2")
        return v


class ModelSpec(BaseModel):
    """One model to cross-validate: which features, which model, how to train it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="name in results (e.g. 'cnn')")
    model: str = Field(description="registry name: cnn, tdnn, rnn, crnn, classical")
    features: Literal["logmel", "mfcc", "functionals"] = "logmel"
    params: dict[str, Any] = Field(default_factory=dict, description="model constructor parameters")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields (torch models)")
    augment: dict[str, Any] | None = Field(
        default_factory=dict, description="AugmentConfig fields for SpecAugment on training crops; None = off"
    )
    robust: dict[str, Any] | None = Field(
        None,
        description="robustness augmentation: degraded variants of each training clip "
        "(ser.train.robust.RobustConfig fields: copies, seed, noises, degrade, p_pitch, ...); None = off",
    )
    trim: Literal["level", "vad", "none"] = Field(
        "level",
        description="how leading/trailing non-speech is trimmed: level (frames within trim_db of the loudest), "
        "vad (first to last voiced frame, webrtcvad; ser.model_folder.TRIM_MODES), none",
    )
    trim_db: float | None = Field(40.0, description="trim leading/trailing frames this far below the loudest")
    val_speakers: int = Field(
        2, ge=0, description="validation speakers carved out of each training fold (0: none, keep the last epoch)"
    )
    seed: int = Field(0, description="added to the run's seed: members of a seed ensemble differ only here")
    distil: DistilConfig | None = Field(None, description="knowledge distillation from a teacher recipe; None = off")

    @field_validator("robust")
    @classmethod
    def _robust(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        """Every field filled in, so a recipe's fingerprint does not depend on how its defaults were spelled."""
        from ser.train.robust import make_robust_config

        try:
            return None if v is None else make_robust_config(v).model_dump(mode="json")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _distil(self) -> ModelSpec:
        """Distillation needs a torch student (with robustness variants, each variant takes the teacher's target
        of the clip it copies: :func:`ser.train.distil.variant_targets`)."""
        if self.distil is not None and self.model == "classical":
            raise ValueError("distil: the student must be a torch model, not classical")
        return self

    def fingerprint(self) -> str:
        """Short hash of everything that decides the run (saved with each fold, so a changed spec reruns it).

        The name and where it runs (``train.device``, ``train.num_threads``) are left out, as they are for resuming
        a checkpoint: a fold trained on a GPU, or under another name, counts for the same recipe (the fold's
        ``info['device']`` says where it ran)."""
        import hashlib

        data = self.model_dump(mode="json", exclude={"name"})  # the name is where results go, not what they are
        data["train"] = {k: v for k, v in data["train"].items() if k not in ("device", "num_threads")}
        if data["robust"] is None:  # added later: recipes without it keep their fingerprints (and saved folds)
            del data["robust"]
        elif data["robust"].get("p_formant") == 0:  # likewise the formant shift (VTLP) fields, when it is off
            data["robust"] = {k: v for k, v in data["robust"].items() if k not in ("p_formant", "formant_warp")}
        if data["trim"] == "level":  # likewise: the default (and only mode before 2026-12) is left out
            del data["trim"]
        if data["distil"] is None:  # the same
            del data["distil"]
        else:  # a changed teacher recipe (its members' code recipes included) trains another student
            from ser.train.distil import teacher_fingerprint

            assert self.distil is not None
            data["distil"]["teacher_fingerprint"] = teacher_fingerprint(self.distil)
            if data["distil"]["cross_fit"] == 0:  # added later: in-sample students keep their fingerprints
                del data["distil"]["cross_fit"]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class EnsembleSpec(BaseModel):
    """Late fusion: the weighted mean of member models' class probabilities."""

    model_config = ConfigDict(extra="forbid")

    name: str
    members: list[str]
    weights: list[float] | None = None
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="recipe overrides (train, params, ...) applied to every member recipe"
    )


def train_config(spec: ModelSpec, seed: int = 0) -> TrainConfig:
    """The :class:`~ser.train.trainer.TrainConfig` of a torch ``spec``: its model and parameters, ``seed``, then its
    ``train`` fields (a ``seed`` there wins), and the distillation loss's ``alpha`` / ``temperature`` of a ``distil``
    recipe."""
    from ser.train.trainer import TrainConfig

    data = {"model": spec.model, "model_params": spec.params, "seed": seed, **spec.train}
    if spec.distil is not None:
        data["distil"] = {"alpha": spec.distil.alpha, "temperature": spec.distil.temperature}
    return TrainConfig.from_dict(data)


def eval_settings(cfg: TrainConfig) -> dict[str, Any]:
    """How a trained model evaluates a clip (whole, or the mean over windows), from its TrainConfig."""
    return {
        "eval_mode": cfg.eval_mode,
        "eval_window": cfg.window_frames() if cfg.eval_mode == "windows" else None,
        "eval_hop": cfg.eval_hop,
    }


def model_input(member_specs: list[ModelSpec]) -> dict[str, Any]:
    """The input of the model that ships for ``member_specs``: ``{"kind", "trim", "trim_db"}``.

    One spec, or members on the same features: that kind. Members on different frame features (a ``cnn`` on
    log-mel and an ``rnn`` on MFCC): the kinds stacked in the order members first use them (``logmel+mfcc``;
    :func:`ser.model_folder.frame_input`). Every member must be a torch frame model with the same trimming, since the
    frames are trimmed once for all kinds.
    """
    from ser.features import FRAME_KINDS

    bad = [m for m in member_specs if m.model == "classical" or m.features not in FRAME_KINDS]
    if bad or len({(m.trim, m.trim_db) for m in member_specs}) != 1:
        raise ConfigError(
            "to ship as one model, every member must be a torch frame model with the same trimming (got "
            + ", ".join(
                f"{m.name}: {m.model} on {m.features}, trim {m.trim}, trim_db {m.trim_db}" for m in member_specs
            )
            + ")"
        )
    return {
        "kind": "+".join(dict.fromkeys(m.features for m in member_specs)),
        "trim": member_specs[0].trim,
        "trim_db": member_specs[0].trim_db,
    }


def input_rows(member_specs: list[ModelSpec], n_features: list[int]) -> list[list[int]] | None:
    """The ``[start, stop)`` rows of the stacked input (:func:`model_input`) each member reads, given each
    member's ``n_features``; None when every member reads the same kind."""
    width: dict[str, int] = {}
    for m, n in zip(member_specs, n_features, strict=True):
        if width.setdefault(m.features, n) != n:
            raise ConfigError(f"members on {m.features} disagree on its rows ({width[m.features]} vs {n})")
    if len(width) == 1:
        return None
    start, offsets = 0, {}
    for kind, n in width.items():
        offsets[kind], start = start, start + n
    return [[offsets[m.features], offsets[m.features] + width[m.features]] for m in member_specs]
