"""What a tuning trial sees and does (see :mod:`ser.train.tune` for the protocol).

:func:`tuning_roles` gives the train / validation rows of one fold — the validation speakers ``ser train`` would
use for early stopping — with the test rows dropped and :func:`check_test_unseen` run against the split table;
:func:`objective_data` keeps only those utterances' features; :func:`make_objective` builds the optuna objective:
apply the trial's values to the recipe, train on the training speakers (:func:`ser.train.cv.fit_spec`) and return
the validation UAR, reported every epoch so a pruner can stop a poor trial.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ser.errors import ConfigError, LeakageError, SerError
from ser.train.spec import ModelSpec
from ser.train.tune_space import Param, apply_params

# ----------------------------------------------------------------------------------------------------------------
# the data the objective sees


def check_test_unseen(frame: pd.DataFrame, splits: pd.DataFrame, fold: int) -> None:
    """Raise :class:`LeakageError` if any test utterance, speaker or content hash of ``fold`` (read from the split
    table itself) is in ``frame`` (manifest rows the objective trains or validates on)."""
    held = splits[(splits["fold"] == fold) & (splits["role"] == "test")]
    for col in ("utt_id", "speaker", "sha256", "pcm_hash"):
        if col not in held.columns or col not in frame.columns:
            continue
        test_values = {str(v) for v in held[col] if str(v) not in ("", "nan", "None", "<NA>")}
        hit = frame[frame[col].astype(str).isin(test_values)]
        if len(hit):
            raise LeakageError(
                f"fold {fold}: test {col} {hit[col].iloc[0]} is in the tuning data (utterance {hit['utt_id'].iloc[0]})"
            )


TUNE_VAL_SPEAKERS = 2
"""Validation speakers carved for tuning a recipe that trains without any (``val_speakers: 0``)."""


def tuning_val_speakers(spec: ModelSpec, override: int | None = None) -> int:
    """How many validation speakers the objective scores on: ``override``, else the recipe's own, else
    :data:`TUNE_VAL_SPEAKERS` (a recipe that keeps its last epoch is still tuned on held-out speakers)."""
    if override is not None:
        return int(override)
    return spec.val_speakers or TUNE_VAL_SPEAKERS


def tuning_roles(
    manifest: pd.DataFrame, splits: pd.DataFrame, fold: int, val_speakers: int, seed: int
) -> dict[str, pd.DataFrame]:
    """``{"train", "val"}`` manifest rows the objective uses for ``fold`` — the same validation speakers
    ``ser train`` would use for early stopping — with the test rows dropped and the test-fold guard run."""
    from ser.train.cv import fold_roles

    roles = fold_roles(manifest, splits, fold, val_speakers, seed)
    out = {"train": roles["train"].reset_index(drop=True), "val": roles["val"].reset_index(drop=True)}
    if out["train"].empty or out["val"].empty:
        raise SerError(f"fold {fold}: tuning needs training and validation speakers")
    check_test_unseen(pd.concat([out["train"], out["val"]], ignore_index=True), splits, fold)
    return out


class TrialFailed(SerError):
    """A trial that could not be evaluated (e.g. training diverged); the study records it as failed and goes on."""


@dataclass
class ObjectiveData:
    train_ids: list[str]
    val_ids: list[str]
    y_train: np.ndarray
    y_val: np.ndarray
    feats: dict[str, dict[str, np.ndarray]]
    """Only the train + val utterances' features."""


def objective_data(roles: dict[str, pd.DataFrame], feats: Mapping, classes: list[str]) -> ObjectiveData:
    index = {c: i for i, c in enumerate(classes)}
    ids, ys = {}, {}
    for role in ("train", "val"):
        frame = roles[role]
        unknown = sorted(set(frame["emotion"]) - set(index))
        if unknown:
            raise ConfigError(f"{role} rows have emotion(s) {', '.join(map(str, unknown))} outside the classes")
        keep = frame[frame["utt_id"].isin(feats.keys())]
        if keep.empty:
            raise SerError(f"no {role} utterance has features")
        ids[role] = keep["utt_id"].tolist()
        ys[role] = np.array([index[e] for e in keep["emotion"]], dtype=np.int64)
    seen = {u: feats[u] for u in ids["train"] + ids["val"]}
    return ObjectiveData(ids["train"], ids["val"], ys["train"], ys["val"], seen)


# ----------------------------------------------------------------------------------------------------------------
# the objective


def make_objective(spec: ModelSpec, params: list[Param], data: ObjectiveData, n_classes: int, train_seed: int):
    import optuna

    from ser.train.cv import fit_spec, utterance_arrays

    def objective(trial) -> float:
        values = {p.key: p.suggest(trial) for p in params}
        s = apply_params(spec, values)
        try:
            return run(trial, s)
        except ConfigError:  # a bad space or recipe: stop the study with its one-line reason
            raise
        except SerError as exc:  # e.g. training diverged at this learning rate: fail this trial, go on
            trial.set_user_attr("error", str(exc))
            raise TrialFailed(str(exc)) from None

    def run(trial, s: ModelSpec) -> float:
        x_train = utterance_arrays(s, data.feats, data.train_ids)
        x_val = utterance_arrays(s, data.feats, data.val_ids)
        start = time.perf_counter()
        if s.model == "classical":
            from ser.evaluate.metrics import uar_score
            from ser.models.classical import ClassicalModel

            clf = ClassicalModel(n_classes, x_train[0].shape[0], **{"seed": train_seed, **s.params})
            clf.fit(np.stack(x_train), data.y_train)
            value = uar_score(data.y_val, clf.predict_proba(np.stack(x_val)).argmax(axis=1))
            trial.set_user_attr("seconds", round(time.perf_counter() - start, 3))
            return value

        def on_epoch(record: dict[str, Any]) -> None:
            if record["val_uar"] is None:
                return
            epoch, uar = int(record["epoch"]), float(record["val_uar"])
            trial.set_user_attr("last_val_uar", uar)
            trial.set_user_attr("epochs_run", epoch)
            trial.report(uar, epoch)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_epoch", epoch)
                raise optuna.TrialPruned(f"pruned at epoch {epoch} (val UAR {uar:.3f})")

        x = {"train": x_train, "val": x_val}
        y = {"train": data.y_train, "val": data.y_val}
        result, _ = fit_spec(s, x, y, n_classes, train_seed, on_epoch=on_epoch)
        trial.set_user_attr("best_epoch", int(result.best_epoch))
        trial.set_user_attr("epochs_run", int(result.epochs_run))
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 3))
        return float(result.best_val_uar)

    return objective
