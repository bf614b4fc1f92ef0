"""Hyper-parameter tuning with Optuna on validation speakers carved out of one training fold.

Protocol (speaker-independent, the test fold is never seen):

1. :func:`~ser.train.tune_objective.tuning_roles` takes fold ``k`` of ``splits`` exactly as ``ser train`` does
   (:func:`ser.train.cv.fold_roles`): the split's own ``val`` speakers when it has them, else ``val_speakers``
   whole speakers carved out of the fold's *training* speakers (seed ``seed + k``). The ``test`` rows are dropped
   there and :func:`~ser.train.tune_objective.check_test_unseen` asserts, against the split table itself, that no
   test utterance, speaker or content hash is left in what the objective gets. Only the features of those rows are
   handed to the objective.
2. Each trial draws values from the search space (:func:`ser.train.tune_space.parse_space`), applies them to the
   recipe (:func:`ser.train.tune_space.apply_params`), trains on the remaining training speakers
   (:func:`ser.train.cv.fit_spec`, as ``ser train`` does) and returns the validation UAR: the best epoch's UAR for
   torch models (reported every epoch, so a pruner can stop a poor trial early), the UAR of the fitted
   scikit-learn model for ``classical`` (no epochs, no pruning).
3. With ``storage`` (a SQLite file) the study lives on disk: the same storage + study name continues it and only
   the trials still missing to reach ``n_trials`` finished (complete or pruned) trials are run. A process killed in
   the middle of a trial leaves it ``RUNNING``; the storage's heartbeat marks it failed on the next run and re-queues
   its parameters once.
4. Each trial is one :class:`~ser.executor.Executor` task (:func:`run_trial_task`): here, one after another, or
   on Ray, in parallel, each worker reopening the study from the same SQLite file (SQLite rather than Optuna's
   JournalStorage because of that heartbeat, which the journal storage lacks: the trial of a worker that died is
   failed and retried as above, and Ray re-runs the task).

The search space, samplers and pruners are in :mod:`ser.train.tune_space`, the objective and the data it sees in
:mod:`ser.train.tune_objective`; this module runs the study and writes its outputs.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ser.errors import ConfigError, SerError
from ser.executor import LOCAL, Executor
from ser.train.spec import ModelSpec
from ser.train.tune_objective import (
    ObjectiveData,
    TrialFailed,
    check_test_unseen,
    make_objective,
    objective_data,
    tuning_roles,
    tuning_val_speakers,
)
from ser.train.tune_space import (
    SAMPLERS,
    SCALAR_TYPES,
    Param,
    apply_params,
    grid_space,
    make_pruner,
    make_sampler,
    nested_overrides,
    parse_space,
)

METRIC = "val_uar"
HEARTBEAT_S = 60
"""Seconds between heartbeats of a running trial in a SQLite study."""
GRACE_S = 180
"""A running trial without a heartbeat for this long belongs to a dead process: it is failed and retried once."""
SQLITE_LOCK_S = 60
"""Seconds a writer waits for the SQLite lock: trials on Ray write to one study file from several processes."""
CONFIG_ATTR = "ser_tune"
"""Study user attribute holding what the study was made for (recipe, fold, space, ...); checked on resume."""


# ----------------------------------------------------------------------------------------------------------------
# the study


@dataclass
class TuneResult:
    """Outcome of :func:`tune`. ``best_*`` are None while no trial has completed."""

    study_name: str
    storage: str | None
    model: str
    fold: int
    best_params: dict[str, Any] | None
    best_value: float | None
    best_trial: int | None
    best_spec: ModelSpec | None
    n_complete: int
    n_pruned: int
    n_failed: int
    n_new: int
    """Trials run by this call (the rest were already in the storage)."""
    n_target: int
    trials: pd.DataFrame
    """One row per trial: number, state, value, param columns (dotted keys; lists as JSON), user attributes."""
    train_speakers: list[str] = field(default_factory=list)
    val_speakers: list[str] = field(default_factory=list)

    def overrides(self) -> dict[str, Any]:
        """The best values as recipe overrides (``ser train --config``); empty without a completed trial."""
        return nested_overrides(self.best_params or {})

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no trial table)."""
        return {
            "study": self.study_name,
            "storage": self.storage,
            "model": self.model,
            "fold": self.fold,
            "metric": METRIC,
            "best_value": self.best_value,
            "best_trial": self.best_trial,
            "best_params": self.best_params,
            "overrides": self.overrides(),
            "trials": {
                "target": self.n_target,
                "complete": self.n_complete,
                "pruned": self.n_pruned,
                "failed": self.n_failed,
                "new": self.n_new,
            },
            "train_speakers": self.train_speakers,
            "val_speakers": self.val_speakers,
        }


def _storage_url(storage: str | Path) -> str:
    text = str(storage)
    if text.startswith("sqlite:///"):
        return text
    if "://" in text:
        raise ConfigError(f"storage must be a SQLite file path (or sqlite:/// URL), got {text!r}")
    path = Path(text).expanduser().resolve()
    if path.is_dir():
        raise ConfigError(f"storage is a folder, expected a SQLite file: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _open_study(storage: str | Path | None, study_name: str, pruner: Any):
    import optuna
    from optuna.storages import RDBStorage

    try:  # optuna >= 4.9
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        retry: dict[str, Any] = {"heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=1)}
    except ImportError:  # pragma: no cover - older optuna
        from optuna.storages import RetryFailedTrialCallback

        retry = {"failed_trial_callback": RetryFailedTrialCallback(max_retry=1)}
    url = None if storage is None else _storage_url(storage)
    try:
        rdb = None
        if url is not None:
            rdb = RDBStorage(
                url,
                engine_kwargs={"connect_args": {"timeout": SQLITE_LOCK_S}},
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                **retry,
            )
        study = optuna.create_study(
            storage=rdb,
            study_name=study_name,
            direction="maximize",
            load_if_exists=True,
            sampler=optuna.samplers.RandomSampler(),  # replaced once the trial count is known
            pruner=make_pruner(pruner),
        )
    except SerError:
        raise
    except Exception as exc:  # sqlalchemy / optuna errors: a bad or foreign storage file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SerError(f"cannot open study {study_name!r} in {storage}: {reason}") from None
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"study {study_name!r} in {storage} minimises; use another study name")
    return study, url


def _check_study_config(study, config: dict[str, Any], storage: Any) -> None:
    config = json.loads(json.dumps(config))
    old = study.user_attrs.get(CONFIG_ATTR)
    if old is None:
        if study.trials:
            raise ConfigError(f"study {study.study_name!r} in {storage} was not made by ser tune; use another name")
        study.set_user_attr(CONFIG_ATTR, config)
        return
    changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
    if changed:
        raise ConfigError(
            f"study {study.study_name!r} in {storage} was made with a different {', '.join(changed)}; "
            "use the same settings to resume, or another --study name"
        )


def tune(
    manifest: pd.DataFrame,
    splits: pd.DataFrame,
    spec: ModelSpec,
    feats: Mapping[str, Mapping[str, np.ndarray]],
    classes: list[str],
    *,
    fold: int = 0,
    space: Mapping[str, Any],
    n_trials: int | None,
    sampler: str = "tpe",
    pruner: Any = "median",
    storage: str | Path | None = None,
    study_name: str | None = None,
    val_speakers: int | None = None,
    seed: int = 0,
    timeout: float | None = None,
    log: Callable[[str], None] | None = None,
    executor: Executor | None = None,
) -> TuneResult:
    """Tune ``spec``'s hyper-parameters in ``space`` by validation UAR on fold ``fold``'s carved validation speakers.

    ``feats`` ``{utt_id: {kind: array}}`` as :mod:`ser.train.cv` takes it (only train + val utterances are read).
    ``n_trials``: finished (complete + pruned) trials the study should hold; a resumed study runs only the missing
    ones. ``None`` with ``sampler="grid"`` means the whole grid. ``pruner``: ``median``, ``halving``, ``none`` or an
    optuna pruner. ``storage``: a SQLite file (``None``: in memory, no resume). ``study_name`` defaults to
    ``<recipe>-fold<k>``. ``val_speakers`` (default ``spec.val_speakers``) are carved when the split has no
    ``val`` role. Each trial's sampler is seeded with ``seed`` plus the number of trials in the study before it
    (grid: ``seed``).
    ``log(line)`` gets one progress line per finished trial.

    ``executor`` (:mod:`ser.executor`): each trial is a task; on Ray the trials run in parallel, each in a worker
    that reopens the study from ``storage`` (required there), and TPE samples with the constant liar (a running
    trial counts as a bad one, so parallel trials spread out). Parallel trials see each other's results in
    another order than one after another, so a Ray study is not the local one, trial for trial.
    """
    import optuna

    if not isinstance(spec, ModelSpec):
        raise ConfigError("tune one model recipe, not an ensemble")
    if spec.distil is not None:  # each trial would train the teacher too: tune the student's recipe without it
        raise ConfigError(f"tune the student recipe without its distil part, not {spec.name} (it trains a teacher)")
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    params = parse_space(space, spec)
    n_trials, grid_size = _trial_target(params, sampler, n_trials, timeout)
    val_speakers = tuning_val_speakers(spec, val_speakers)
    study_name = study_name or f"{spec.name}-fold{fold}"

    executor = executor or LOCAL
    if executor.is_ray and storage is None:
        raise ConfigError("tuning on Ray needs a study storage (a SQLite file) that every worker opens")

    roles = tuning_roles(manifest, splits, fold, val_speakers, seed)
    data = objective_data(roles, feats, classes)
    check_test_unseen(pd.concat([r[r["utt_id"].isin(data.feats.keys())] for r in roles.values()]), splits, fold)
    trial = TrialSetup(spec, params, data, len(classes), seed + fold, sampler, n_trials, grid_size)
    config = {
        "recipe": spec.model_dump(mode="json"),
        "fold": fold,
        "space": {p.key: p.describe() for p in params},
        "classes": list(classes),
        "val_speakers": sorted(map(str, roles["val"]["speaker"].unique())),
        "seed": seed,
    }

    prev_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own log line reports each trial
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study, url = _open_study(storage, study_name, pruner)
            _check_study_config(study, config, storage)
            handle = StudyHandle(url, study_name, pruner, study)
            n_before = _run_missing_trials(handle, trial, seed, timeout, log, executor)
    finally:
        optuna.logging.set_verbosity(prev_verbosity)
    return _result(study, url, spec, params, fold, roles, n_trials, n_new=len(study.trials) - n_before)


def _trial_target(params: list[Param], sampler: str, n_trials: int | None, timeout: float | None):
    """``(n_trials, grid_size)``: the finished trials the study should hold (``None``: the whole grid) and the grid's
    size (None unless ``sampler`` is grid); a bad count or timeout raises ConfigError."""
    grid = grid_space(params) if sampler == "grid" else None
    grid_size = math.prod(len(v) for v in grid.values()) if grid is not None else None
    if n_trials is None:
        if grid_size is None:
            raise ConfigError("the number of trials is required unless the sampler is grid")
        n_trials = grid_size
    if n_trials < 1:
        raise ConfigError(f"the number of trials must be at least 1, got {n_trials}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout must be positive, got {timeout}")
    return n_trials, grid_size


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a study shares: the objective's inputs (:func:`make_objective`) and the sampler."""

    spec: ModelSpec
    params: list[Param]
    data: ObjectiveData
    n_classes: int
    train_seed: int
    sampler: str
    n_target: int
    grid_size: int | None


@dataclass
class StudyHandle:
    """The study a trial runs in: the one open in this process, or (in a Ray worker, where it arrives pickled
    without it) reopened from the storage ``url``."""

    url: str | None
    name: str
    pruner: Any
    study: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "study": None}  # a storage connection does not travel; the URL does

    def open(self):
        if self.study is None:
            self.study, _ = _open_study(self.url, self.name, self.pruner)
        return self.study


def _missing(study, setup: TrialSetup) -> int:
    """Trials ``study`` still lacks to hold ``n_target`` finished ones (a grid: no more than its unvisited points)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    remaining = max(0, setup.n_target - sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials))
    if setup.grid_size is not None:
        visited = {t.system_attrs["grid_id"] for t in trials if t.state.is_finished() and "grid_id" in t.system_attrs}
        remaining = min(remaining, setup.grid_size - len(visited))
    return remaining


def _run_missing_trials(handle: StudyHandle, setup: TrialSetup, seed, timeout, log, executor: Executor) -> int:
    """Run the trials the study still lacks as ``executor`` tasks, one trial each; returns how many trials the
    study held before."""
    existing = len(handle.open().get_trials(deepcopy=False))
    remaining = _missing(handle.study, setup)
    deadline = None if timeout is None else time.time() + timeout
    shared = {
        "study": handle,
        "setup": setup,
        "deadline": deadline,
        "threads": executor.task_threads,
        "liar": executor.is_ray,
    }
    # the grid's seed fixes which point each grid id is, so every trial's grid sampler needs the same one
    seeds = [seed if setup.sampler == "grid" else seed + existing + i for i in range(remaining)]
    for _, line in executor.iter_tasks(run_trial_task, seeds, shared=shared):
        if line is not None and log is not None:
            log(line)
    return existing


def run_trial_task(
    sampler_seed: int,
    *,
    study: StudyHandle,
    setup: TrialSetup,
    deadline: float | None = None,
    threads: int | None = None,
    liar: bool = False,
) -> str | None:
    """One trial of the study (an :meth:`~ser.executor.Executor.map_tasks` task, here or in a Ray worker with
    torch pinned to ``threads``): sample with a sampler seeded ``sampler_seed``, train, record the outcome in the
    storage. Returns the trial's progress line, or None when nothing ran (``deadline`` passed, or the study
    already holds its target: a task Ray retried after a lost worker)."""
    from ser.train.cv import pin_threads

    if deadline is not None and time.time() >= deadline:
        return None
    pin_threads(threads)
    st = study.open()
    if _missing(st, setup) == 0:
        return None
    st.sampler = make_sampler(setup.sampler, setup.params, sampler_seed, constant_liar=liar)
    objective = make_objective(setup.spec, setup.params, setup.data, setup.n_classes, setup.train_seed)
    lines: list[str] = []
    st.optimize(objective, n_trials=1, callbacks=[_progress(lines.append, setup.n_target)], catch=(TrialFailed,))
    return lines[-1] if lines else None


def _progress(log: Callable[[str], None], n_target: int):
    """An optuna callback that hands ``log`` one line about each finished trial."""
    from optuna.trial import TrialState

    finished_states = (TrialState.COMPLETE, TrialState.PRUNED)

    def callback(study, trial) -> None:
        done = sum(t.state in finished_states for t in study.get_trials(deepcopy=False))
        state = trial.state.name.lower()
        if state == "complete":
            what = f"{METRIC} {trial.value:.3f}"
        elif "pruned_at_epoch" in trial.user_attrs:
            attrs = trial.user_attrs
            what = f"pruned at epoch {attrs['pruned_at_epoch']} ({METRIC} {attrs['last_val_uar']:.3f})"
        elif "error" in trial.user_attrs:
            what = f"failed: {trial.user_attrs['error']}"
        else:
            what = state
        try:
            best = f"best {study.best_value:.3f} (#{study.best_trial.number})"
        except ValueError:
            best = "no completed trial yet"
        shown = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        log(f"trial {done}/{n_target} (#{trial.number}) {what} | {best} | {shown}")

    return callback


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _result(study, url, spec, params, fold, roles, n_target, n_new) -> TuneResult:
    from optuna.trial import TrialState

    by_key = {p.key: p for p in params}
    rows = []
    for t in study.get_trials(deepcopy=False):
        value = t.value if t.state == TrialState.COMPLETE else None  # optuna gives pruned ones their last report
        row: dict[str, Any] = {"number": t.number, "state": t.state.name.lower(), "value": value}
        for key, p in by_key.items():
            v = p.decode(t.params[key]) if key in t.params else None
            row[key] = v if isinstance(v, SCALAR_TYPES) else json.dumps(v)
        row["seconds"] = t.duration.total_seconds() if t.duration is not None else None
        for attr in ("best_epoch", "epochs_run", "last_val_uar", "pruned_at_epoch", "error"):
            row[attr] = t.user_attrs.get(attr)
        row["retry_of"] = t.system_attrs.get("failed_trial")
        rows.append(row)
    table = pd.DataFrame(rows, columns=["number", "state", "value", *by_key, "seconds", "best_epoch", "epochs_run",
                                        "last_val_uar", "pruned_at_epoch", "error", "retry_of"])  # fmt: skip
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    best_params = None if best is None else {k: by_key[k].decode(v) for k, v in best.params.items() if k in by_key}
    count = lambda s: sum(t.state == s for t in study.get_trials(deepcopy=False))  # noqa: E731
    return TuneResult(
        study_name=study.study_name,
        storage=url,
        model=spec.name,
        fold=fold,
        best_params=best_params,
        best_value=None if best is None else float(best.value),
        best_trial=None if best is None else best.number,
        best_spec=None if best_params is None else apply_params(spec, best_params),
        n_complete=count(TrialState.COMPLETE),
        n_pruned=count(TrialState.PRUNED),
        n_failed=count(TrialState.FAIL),
        n_new=n_new,
        n_target=n_target,
        trials=table,
        train_speakers=sorted(map(str, roles["train"]["speaker"].unique())),
        val_speakers=sorted(map(str, roles["val"]["speaker"].unique())),
    )


# ----------------------------------------------------------------------------------------------------------------
# outputs


BEST_PARAMS = "best_params.json"
BEST_CONFIG = "best_config.yaml"
TRIALS = "trials.csv"
HISTORY_PLOT = "optimization_history.png"


def plot_history(trials: pd.DataFrame, path: str | Path, title: str = "optimisation history") -> Path:
    """PNG of the objective per trial (completed: dots; pruned: crosses at their last reported value) and the best
    value so far, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ser.io import atomic_write

    fig = Figure(figsize=(7.0, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    done = trials[trials["state"] == "complete"].sort_values("number")
    pruned = trials[(trials["state"] == "pruned") & trials["last_val_uar"].notna()]
    if len(done):
        ax.scatter(done["number"], done["value"], color="tab:blue", s=22, label="completed trial", zorder=3)
        best = done["value"].astype(float).cummax().tolist()
        x = done["number"].tolist()
        ax.step(
            [*x, int(trials["number"].max())], [*best, best[-1]], where="post", color="tab:red", label="best so far"
        )
    if len(pruned):
        ax.scatter(pruned["number"], pruned["last_val_uar"], marker="x", color="0.5", label="pruned (last value)")
    if not len(done) and not len(pruned):
        ax.text(0.5, 0.5, "no finished trial", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("trial")
    ax.set_ylabel("validation UAR")
    ax.set_ylim(-0.02, 1.03)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))


def write_outputs(result: TuneResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``best_params.json``, ``trials.csv``, ``optimization_history.png`` and, once a trial has completed,
    ``best_config.yaml`` (recipe overrides for ``ser train --config``) atomically into ``out_dir``."""
    import yaml

    from ser.io import write_json, write_text

    out = Path(out_dir)
    paths = {
        "best_params": write_json(out / BEST_PARAMS, result.summary()),
        "trials": write_text(out / TRIALS, result.trials.to_csv(index=False)),
        "plot": plot_history(result.trials, out / HISTORY_PLOT, f"{result.study_name}: {METRIC} per trial"),
    }
    if result.best_params is not None:
        text = yaml.safe_dump(result.overrides(), sort_keys=False, default_flow_style=False)
        paths["best_config"] = write_text(out / BEST_CONFIG, text)
    return paths
