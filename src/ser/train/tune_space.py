"""The search space of :mod:`ser.train.tune`: which recipe fields are tuned over which ranges, and the samplers and
pruners that draw and stop trials.

A search space is a mapping (e.g. from YAML); keys are dotted recipe fields (``params.<model parameter>``,
``train.<TrainConfig field>``, ``augment.<AugmentConfig field>``) or ``trim_db``::

    train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    params.dropout: {type: float, low: 0.1, high: 0.5}
    params.channels: {type: categorical, choices: [[16, 32, 64, 64], [16, 32, 64, 96]]}
    train.epochs: {type: int, low: 10, high: 40, step: 10}
    params.kind: [svm, logreg]          # a bare list is short for a categorical

Optuna stores only scalar categorical choices, so lists / mappings are JSON-encoded for it and decoded back.
The grid sampler needs a finite grid: categorical choices and integer ranges; float ranges are rejected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from ser.errors import ConfigError
from ser.train.spec import ModelSpec

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "halving", "none")
TUNABLE_SECTIONS = ("params", "train", "augment")
TUNABLE_FIELDS = ("trim_db",)
MEDIAN_STARTUP_TRIALS = 3
"""The median pruner prunes nothing before this many trials have finished ..."""
MEDIAN_WARMUP_EPOCHS = 3
"""... nor before this many epochs of a trial (early validation UAR is noisy)."""
SCALAR_TYPES = (str, int, float, bool, type(None))
"""Values optuna stores as they are (anything else is stored as JSON)."""
_TRAIN_RESERVED = ("model", "model_params")

ParamType = Literal["float", "int", "categorical"]


# ----------------------------------------------------------------------------------------------------------------
# search space


@dataclass(frozen=True)
class Param:
    """One tuned recipe field. ``key`` is dotted (``train.lr``); ``choices`` hold the decoded values."""

    key: str
    type: ParamType
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def encoded_choices(self) -> list[Any]:
        """Choices as optuna stores them: scalars as they are, lists / mappings as JSON strings."""
        return [c if isinstance(c, SCALAR_TYPES) else json.dumps(c) for c in self.choices]

    def decode(self, value: Any) -> Any:
        """The recipe value of an optuna-side value (JSON strings of list / mapping choices are decoded)."""
        if self.type != "categorical" or not isinstance(value, str):
            return value
        for raw, enc in zip(self.choices, self.encoded_choices(), strict=True):
            if enc == value:
                return raw
        return value

    def _bounds(self) -> tuple[float, float]:
        """``(low, high)`` of a float / int range (:func:`parse_space` sets both for every such parameter)."""
        assert self.low is not None and self.high is not None, f"{self.key}: a {self.type} parameter without a range"
        return self.low, self.high

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter in an optuna ``trial``; returns the decoded recipe value."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            low, high = self._bounds()
            return trial.suggest_int(self.key, int(low), int(high), log=self.log, step=int(self.step or 1))
        return self.decode(trial.suggest_categorical(self.key, self.encoded_choices()))

    def grid_values(self) -> list[Any]:
        """The optuna-side values of a grid search over this parameter."""
        if self.type == "categorical":
            return self.encoded_choices()
        if self.type == "int":
            low, high = self._bounds()
            return list(range(int(low), int(high) + 1, int(self.step or 1)))
        raise ConfigError(
            f"grid search needs a finite set of values, but {self.key} is a float range; "
            "give it as type: categorical with choices"
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready definition (stored with the study to detect a changed space on resume)."""
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        return out


def load_space(path: str | Path) -> dict[str, Any]:
    """Read a search-space YAML file into a mapping (validate it with :func:`parse_space`)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: expected a non-empty mapping of dotted recipe fields to ranges")
    return data


def parse_space(space: Mapping[str, Any], spec: ModelSpec) -> list[Param]:
    """Validate a search-space mapping against the recipe ``spec``; one :class:`Param` per key, in key order."""
    if not isinstance(space, Mapping) or not space:
        raise ConfigError("search space: expected a non-empty mapping of dotted recipe fields to ranges")
    return [_parse_param(str(key), value, spec) for key, value in space.items()]


def _parse_param(key: str, value: Any, spec: ModelSpec) -> Param:
    _check_key(key, spec)
    if isinstance(value, list):
        value = {"type": "categorical", "choices": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"space {key}: expected a mapping with 'type' (float, int, categorical) or a list of choices")
    kind = value.get("type")
    allowed = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"}}
    allowed["categorical"] = {"type", "choices"}
    if kind not in allowed:
        raise ConfigError(f"space {key}: type must be float, int or categorical, got {kind!r}")
    extra = sorted(set(value) - allowed[kind])
    if extra:
        raise ConfigError(f"space {key}: unknown field(s) {', '.join(extra)} for type {kind}")
    if kind == "categorical":
        choices = value.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"space {key}: categorical needs a non-empty list of choices")
        param = Param(key, "categorical", choices=tuple(choices))
        enc = param.encoded_choices()
        if len(set(map(repr, enc))) != len(enc):
            raise ConfigError(f"space {key}: choices repeat")
        return param
    low = _number(key, "low", value.get("low"), kind)
    high = _number(key, "high", value.get("high"), kind)
    step = None if value.get("step") is None else _number(key, "step", value.get("step"), kind)
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"space {key}: log must be true or false")
    if not low < high:
        raise ConfigError(f"space {key}: low must be below high ({low} ≥ {high})")
    if step is not None and step <= 0:
        raise ConfigError(f"space {key}: step must be positive")
    if log and step is not None:
        raise ConfigError(f"space {key}: log and step cannot be combined")
    if log and low <= 0:
        raise ConfigError(f"space {key}: a log range needs low > 0")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def _number(key: str, name: str, v: object, kind: str) -> float:
    """``v`` checked to be a finite number (an integer for an ``int`` range; never a bool)."""
    if (
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and (isinstance(v, int) or kind != "int")
        and math.isfinite(v)
    ):
        return v
    raise ConfigError(f"space {key}: {name} must be {'an integer' if kind == 'int' else 'a number'}, got {v!r}")


def _check_key(key: str, spec: ModelSpec) -> None:
    section, dot, name = key.partition(".")
    if not dot:
        if key in TUNABLE_FIELDS:
            return
        raise ConfigError(
            f"space: cannot tune {key!r}; "
            f"use params.<name>, train.<name>, augment.<name> or {', '.join(TUNABLE_FIELDS)}"
        )
    if section not in TUNABLE_SECTIONS or not name or "." in name:
        raise ConfigError(f"space: cannot tune {key!r}; use params.<name>, train.<name> or augment.<name>")
    if section == "params":
        from ser.models.factory import model_params

        known = list(model_params(spec.model))
        if name not in known:
            raise ConfigError(f"space {key}: {spec.model} has no parameter {name!r}; known: {', '.join(known)}")
        return
    if spec.model == "classical":
        raise ConfigError(f"space {key}: the classical model has no training loop or augmentation; tune params.*")
    if section == "train":
        from ser.train.trainer import TrainConfig

        known = [f for f in TrainConfig.model_fields if f not in _TRAIN_RESERVED]
    else:
        from ser.augment import AugmentConfig

        known = list(AugmentConfig.model_fields)
    if name not in known:
        raise ConfigError(f"space {key}: unknown {section} field {name!r}; known: {', '.join(known)}")


def nested_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted values → recipe overrides (``{"train": {"lr": ...}, "params": {...}}``), the form of
    ``ser train --config``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        section, dot, name = key.partition(".")
        if dot:
            out.setdefault(section, {})[name] = value
        else:
            out[key] = value
    return out


def apply_params(spec: ModelSpec, values: Mapping[str, Any]) -> ModelSpec:
    """``spec`` with dotted ``values`` set (``augment.*`` on a recipe without augmentation starts from defaults)."""
    data = spec.model_dump()
    for section, value in nested_overrides(values).items():
        data[section] = {**(data.get(section) or {}), **value} if isinstance(value, dict) else value
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"recipe {spec.name}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def grid_space(params: list[Param]) -> dict[str, list[Any]]:
    """The grid-sampler search space ``{key: optuna-side values}``; float ranges raise ConfigError."""
    return {p.key: p.grid_values() for p in params}


# ----------------------------------------------------------------------------------------------------------------
# samplers and pruners


def make_sampler(name: str, params: list[Param], seed: int, *, constant_liar: bool = False):
    """A seeded optuna sampler: ``tpe``, ``random`` or ``grid`` (grid order shuffled by ``seed``).
    ``constant_liar``: TPE counts running trials as poor ones, so trials sampled in parallel spread out."""
    import optuna

    if name == "tpe":
        if constant_liar:
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(grid_space(params), seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")


def make_pruner(pruner: Any):
    """``median`` (after :data:`MEDIAN_STARTUP_TRIALS` trials and :data:`MEDIAN_WARMUP_EPOCHS` epochs), ``halving``
    (successive halving, asynchronous) or ``none``; an optuna pruner object is used as it is."""
    import optuna

    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_EPOCHS)
    if pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if pruner in ("none", None):
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {pruner!r}; choose one of: {', '.join(PRUNERS)}")
