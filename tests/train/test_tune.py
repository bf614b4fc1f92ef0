"""``ser tune``: search spaces, samplers, pruning, SQLite resume, the test-fold guard and the CLI outputs."""

from __future__ import annotations

import json
import time

import numpy as np
import optuna
import pandas as pd
import pytest

import ser.cli.tune_cmds  # noqa: F401  registers `ser tune`
from ser.errors import ConfigError, LeakageError
from ser.train.recipes import get_recipe
from ser.train.tune import tune, write_outputs
from ser.train.tune_objective import check_test_unseen, tuning_roles
from ser.train.tune_space import Param, apply_params, grid_space, load_space, make_pruner, parse_space
from tests.conftest import synth_run_dir

CLASSES = ["angry", "happy", "neutral", "sad"]
TINY_CNN = {  # input_norm batch: the classes below differ in stationary band levels, which per-utterance norm removes
    "params": {"channels": [8, 16], "convs": [1, 1], "time_pool": [2, 1], "hidden": 0, "input_norm": "batch"},
    "train": {
        "epochs": 4,
        "batch_size": 8,
        "lr": 3e-2,
        "schedule": "constant",
        "warmup": 0.0,
        "label_smoothing": 0.0,
        "crop_frames": None,
        "patience": None,
        "num_threads": 1,
    },
    "augment": None,
    "val_speakers": 2,
}


class SpyFeatures(dict):
    """A feature dict that records which utterances were read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def synthetic(n_speakers: int = 6, per_class: int = 6, seed: int = 0, n_mels: int = 16, frames: int = 40):
    """Manifest, 3-fold speaker splits and separable frame features: class c raises mel bands 4c..4c+3."""
    from ser.data.split import make_splits

    rng = np.random.default_rng(seed)
    rows, feats = [], {}
    for s in range(n_speakers):
        spk = f"syn:{s:02d}"
        for ci, emotion in enumerate(CLASSES):
            for i in range(per_class):
                utt = f"{spk}/{emotion}_{i}"
                logmel = rng.normal(0.0, 1.0, (n_mels, frames)).astype(np.float32)
                logmel[4 * ci : 4 * ci + 4] += 3.0
                funcs = np.concatenate([logmel.mean(axis=1), logmel.std(axis=1)]).astype(np.float32)
                feats[utt] = {"logmel": logmel, "functionals": funcs}
                gender = "female" if s % 2 else "male"
                rows.append({"utt_id": utt, "speaker": spk, "gender": gender, "emotion": emotion, "sha256": f"h-{utt}"})
    manifest = pd.DataFrame(rows)
    return manifest, make_splits(manifest, "kfold", k=3, seed=0), feats


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def classical():
    return get_recipe("classical")


@pytest.fixture(scope="module")
def tiny_cnn():
    return get_recipe("cnn", TINY_CNN)


SVM_SPACE = {"params.C": {"type": "float", "low": 0.01, "high": 100.0, "log": True}, "params.kind": ["svm", "logreg"]}


# ---------------------------------------------------------------------------------------------------------------
# search space


def test_parse_space_types_and_list_choices_round_trip(tiny_cnn):
    params = parse_space(
        {
            "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "params.dropout": {"type": "float", "low": 0.1, "high": 0.5},
            "params.channels": {"type": "categorical", "choices": [[8, 16], [8, 8]]},
            "train.epochs": {"type": "int", "low": 2, "high": 6, "step": 2},
            "trim_db": [30.0, None],
        },
        tiny_cnn,
    )
    by = {p.key: p for p in params}
    assert by["train.lr"].log and by["train.epochs"].step == 2
    ch = by["params.channels"]
    assert ch.encoded_choices() == ["[8, 16]", "[8, 8]"]  # optuna stores scalars only
    assert ch.decode("[8, 8]") == [8, 8] and by["trim_db"].decode(None) is None
    spec = apply_params(tiny_cnn, {"params.channels": [8, 8], "train.lr": 1e-3, "trim_db": None})
    assert spec.params["channels"] == [8, 8] and spec.params["convs"] == [1, 1]  # other params kept
    assert spec.train["lr"] == 1e-3 and spec.train["epochs"] == 4 and spec.trim_db is None
    assert grid_space(params[2:])["train.epochs"] == [2, 4, 6]


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({"train.lr": {"type": "float", "low": 1e-2, "high": 1e-4}}, "low must be below high"),
        ({"train.lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "log range needs low > 0"),
        ({"train.lr": {"type": "gauss"}}, "type must be float, int or categorical"),
        ({"train.lr": {"type": "float", "low": 0.1, "high": 1, "scale": 2}}, "unknown field"),
        ({"train.epochs": {"type": "int", "low": 1.5, "high": 4}}, "must be an integer"),
        ({"params.nonsense": [1, 2]}, "has no parameter 'nonsense'"),
        ({"train.lrate": [0.1]}, "unknown train field"),
        ({"train.model": ["rnn"]}, "unknown train field"),
        ({"model": ["rnn"]}, "cannot tune 'model'"),
        ({"optimizer.lr": [0.1]}, "cannot tune"),
        ({"params.dropout": {"type": "categorical", "choices": []}}, "non-empty list"),
        ({"params.dropout": [0.1, 0.1]}, "choices repeat"),
        ({}, "non-empty mapping"),
    ],
)
def test_parse_space_rejects_bad_entries(tiny_cnn, space, match):
    with pytest.raises(ConfigError, match=match):
        parse_space(space, tiny_cnn)


def test_classical_cannot_tune_training_fields_and_grid_rejects_float_ranges(classical):
    with pytest.raises(ConfigError, match="no training loop"):
        parse_space({"train.lr": [0.1, 0.2]}, classical)
    with pytest.raises(ConfigError, match=r"params\.C is a float range.*categorical"):
        grid_space(parse_space(SVM_SPACE, classical))


def test_load_space_reports_bad_files(tmp_path, tiny_cnn):
    good = tmp_path / "space.yaml"
    good.write_text("train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\nparams.dropout: [0.1, 0.3]\n")
    assert [p.key for p in parse_space(load_space(good), tiny_cnn)] == ["train.lr", "params.dropout"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("train.lr: {type: float\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_space(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="non-empty mapping"):
        load_space(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_space(tmp_path / "missing.yaml")


# ---------------------------------------------------------------------------------------------------------------
# samplers


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_seeded_samplers_run_and_reproduce(data, classical, sampler):
    manifest, splits, feats = data
    kw = dict(space=SVM_SPACE, n_trials=4, sampler=sampler, pruner="none", val_speakers=2, seed=3)
    res = tune(manifest, splits, classical, feats, CLASSES, **kw)
    assert res.n_complete == 4 and res.n_new == 4 and res.n_pruned == 0
    assert 0.5 < res.best_value <= 1.0  # separable synthetic classes; chance is 0.25
    assert set(res.best_params) == {"params.C", "params.kind"}
    assert 0.01 <= res.best_params["params.C"] <= 100.0
    assert res.best_spec.params["kind"] == res.best_params["params.kind"]
    assert res.best_value == res.trials["value"].max()
    again = tune(manifest, splits, classical, feats, CLASSES, **kw)
    assert again.trials["params.C"].tolist() == res.trials["params.C"].tolist()  # seeded


def test_grid_covers_the_whole_grid_once(data, classical):
    manifest, splits, feats = data
    space = {"params.C": [0.1, 1.0, 10.0], "params.kind": ["svm", "logreg"]}
    res = tune(manifest, splits, classical, feats, CLASSES, space=space, n_trials=None, sampler="grid", pruner="none")
    assert res.n_complete == 6 == res.n_target
    combos = set(zip(res.trials["params.C"], res.trials["params.kind"], strict=True))
    assert combos == {(c, k) for c in (0.1, 1.0, 10.0) for k in ("svm", "logreg")}
    # asking for more trials than the grid holds stops at the grid
    res = tune(manifest, splits, classical, feats, CLASSES, space=space, n_trials=20, sampler="grid", pruner="none")
    assert res.n_complete == 6


def test_tpe_on_a_tiny_cnn_decodes_list_choices(data, tiny_cnn):
    manifest, splits, feats = data
    space = {
        "params.channels": {"type": "categorical", "choices": [[8, 16], [8, 8]]},
        "train.lr": {"type": "float", "low": 1e-2, "high": 5e-2, "log": True},
    }
    res = tune(manifest, splits, tiny_cnn, feats, CLASSES, space=space, n_trials=2, sampler="tpe", pruner="none")
    assert res.n_complete == 2
    assert res.best_params["params.channels"] in ([8, 16], [8, 8])
    assert res.best_spec.params["channels"] == res.best_params["params.channels"]
    assert set(res.trials["params.channels"]) <= {"[8, 16]", "[8, 8]"}  # JSON in the table
    assert res.trials["epochs_run"].tolist() == [4, 4] and res.best_value >= 0.5  # chance: 0.25


# ---------------------------------------------------------------------------------------------------------------
# pruning


def test_make_pruner_names():
    assert isinstance(make_pruner("median"), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("halving"), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)
    with pytest.raises(ConfigError, match="unknown pruner"):
        make_pruner("hyperband-ish")


def test_pruner_forced_to_prune_stops_every_trial_after_one_epoch(data, tiny_cnn, tmp_path):
    manifest, splits, feats = data
    always = optuna.pruners.ThresholdPruner(lower=1.5)  # UAR ≤ 1 < 1.5: prune at the first report
    space = {"train.lr": [1e-3, 5e-3, 1e-2]}
    res = tune(manifest, splits, tiny_cnn, feats, CLASSES, space=space, n_trials=2, sampler="random", pruner=always)
    assert res.n_pruned == 2 and res.n_complete == 0 and res.best_params is None and res.best_value is None
    assert res.trials["pruned_at_epoch"].tolist() == [1, 1] and res.trials["epochs_run"].tolist() == [1, 1]
    paths = write_outputs(res, tmp_path)
    assert "best_config" not in paths and (tmp_path / "optimization_history.png").stat().st_size > 1000
    assert json.loads((tmp_path / "best_params.json").read_text())["trials"]["pruned"] == 2


def test_pruning_stops_the_trial_that_does_not_learn(data, tiny_cnn):
    manifest, splits, feats = data
    spec = apply_params(tiny_cnn, {"train.epochs": 6})
    space = {"train.lr": [1e-9, 3e-2]}  # 1e-9 cannot learn; 3e-2 learns the separable classes
    pruner = optuna.pruners.ThresholdPruner(lower=0.5, n_warmup_steps=4)  # from epoch 4 on, prune below 0.5
    res = tune(manifest, splits, spec, feats, CLASSES, space=space, n_trials=None, sampler="grid", pruner=pruner)
    state = dict(zip(res.trials["train.lr"], res.trials["state"], strict=True))
    assert state == {1e-9: "pruned", 3e-2: "complete"}
    trials = res.trials.set_index("train.lr")
    assert trials.loc[1e-9, "pruned_at_epoch"] == 4 and trials.loc[1e-9, "last_val_uar"] < 0.5
    assert trials.loc[3e-2, "epochs_run"] == 6
    assert res.best_params == {"train.lr": 3e-2} and res.best_value >= 0.5 and res.n_pruned == 1


def test_a_diverging_trial_fails_and_the_study_goes_on(data, tiny_cnn):
    manifest, splits, feats = data
    space = {"train.lr": [1e8, 3e-2], "train.grad_clip": [None]}  # lr 1e8 without clipping: loss turns NaN
    lines = []
    res = tune(manifest, splits, tiny_cnn, feats, CLASSES, space=space, n_trials=None, sampler="grid", log=lines.append)
    trials = res.trials.set_index("train.lr")
    assert trials.loc[1e8, "state"] == "fail" and "diverged" in trials.loc[1e8, "error"]
    assert trials.loc[3e-2, "state"] == "complete" and res.n_failed == 1 and res.n_complete == 1
    assert any("failed: training diverged" in line for line in lines)


# ---------------------------------------------------------------------------------------------------------------
# resume from SQLite


def test_interrupted_study_resumes_from_sqlite(data, classical, tmp_path):
    manifest, splits, feats = data
    db = tmp_path / "study.db"
    kw = dict(space=SVM_SPACE, sampler="tpe", pruner="none", storage=db, study_name="svm")
    first = tune(manifest, splits, classical, feats, CLASSES, n_trials=2, **kw)
    assert first.n_new == 2 and db.is_file()
    second = tune(manifest, splits, classical, feats, CLASSES, n_trials=4, **kw)
    assert second.n_new == 2 and second.n_complete == 4
    assert second.trials["number"].tolist() == [0, 1, 2, 3]
    assert second.trials["params.C"].tolist()[:2] == first.trials["params.C"].tolist()  # earlier trials kept
    assert len(set(second.trials["params.C"])) == 4  # reseeded on resume: no repeated draws
    third = tune(manifest, splits, classical, feats, CLASSES, n_trials=4, **kw)
    assert third.n_new == 0 and third.n_complete == 4
    # resuming with another search space (or fold, recipe, seed) is refused
    with pytest.raises(ConfigError, match="different space"):
        tune(manifest, splits, classical, feats, CLASSES, n_trials=5, **{**kw, "space": {"params.C": [1.0, 2.0]}})
    with pytest.raises(ConfigError, match="different fold"):
        tune(manifest, splits, classical, feats, CLASSES, n_trials=5, fold=1, **kw)


def test_ctrl_c_in_a_trial_leaves_a_resumable_study(data, tiny_cnn, tmp_path):
    manifest, splits, feats = data

    class CtrlCOnTrial1(optuna.pruners.NopPruner):
        def prune(self, study, trial):
            if trial.number == 1:
                raise KeyboardInterrupt
            return False

    kw = dict(space={"train.lr": [1e-2, 2e-2, 3e-2, 4e-2]}, sampler="grid", storage=tmp_path / "s.db", study_name="c")
    with pytest.raises(KeyboardInterrupt):
        tune(manifest, splits, tiny_cnn, feats, CLASSES, n_trials=3, pruner=CtrlCOnTrial1(), **kw)
    res = tune(manifest, splits, tiny_cnn, feats, CLASSES, n_trials=3, pruner="none", **kw)
    assert res.trials["state"].tolist() == ["complete", "fail", "complete", "complete"]
    assert res.n_new == 2 and res.n_complete == 3
    assert set(res.trials.loc[res.trials["state"] == "complete", "train.lr"]).isdisjoint(
        res.trials.loc[res.trials["state"] == "fail", "train.lr"]
    )  # the grid goes on with points not yet tried


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_trial_of_a_killed_process_is_failed_and_retried(data, classical, tmp_path, monkeypatch):
    import ser.train.tune

    manifest, splits, feats = data
    monkeypatch.setattr(ser.train.tune, "HEARTBEAT_S", 1)
    monkeypatch.setattr(ser.train.tune, "GRACE_S", 1)
    db = tmp_path / "study.db"
    kw = dict(space=SVM_SPACE, sampler="random", pruner="none", storage=db, study_name="svm")
    tune(manifest, splits, classical, feats, CLASSES, n_trials=1, **kw)
    # a process dies in the middle of trial #1: RUNNING in the storage, heartbeat stops
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}", heartbeat_interval=1, grace_period=1)
    study = optuna.load_study(study_name="svm", storage=storage)
    trial = study.ask()
    trial.suggest_float("params.C", 0.01, 100.0, log=True)
    trial.suggest_categorical("params.kind", ["svm", "logreg"])
    storage.record_heartbeat(trial._trial_id)
    killed_c = trial.params["params.C"]
    time.sleep(2.5)
    res = tune(manifest, splits, classical, feats, CLASSES, n_trials=3, **kw)
    states = res.trials.set_index("number")["state"]
    assert states[1] == "fail" and res.n_complete == 3 and res.n_failed == 1
    retried = res.trials[res.trials["retry_of"] == 1]
    assert len(retried) == 1 and retried["params.C"].iloc[0] == pytest.approx(killed_c)
    assert retried["state"].iloc[0] == "complete"


# ---------------------------------------------------------------------------------------------------------------
# the test fold is never seen


def test_objective_reads_only_training_speakers_of_the_fold(data, classical):
    manifest, splits, feats = data
    spy = SpyFeatures(feats)
    for fold in (0, 1):
        spy.read.clear()
        res = tune(manifest, splits, classical, spy, CLASSES, fold=fold, space=SVM_SPACE, n_trials=2, sampler="random")
        f = splits[splits["fold"] == fold]
        test_ids = set(f.loc[f["role"] == "test", "utt_id"])
        test_spk = set(f.loc[f["role"] == "test", "speaker"])
        train_ids = set(f.loc[f["role"] != "test", "utt_id"])
        assert spy.read and spy.read <= train_ids and not spy.read & test_ids
        assert not (set(res.train_speakers) | set(res.val_speakers)) & test_spk
        assert not set(res.train_speakers) & set(res.val_speakers) and len(res.val_speakers) == 2
        roles = tuning_roles(manifest, splits, fold, 2, 0)
        assert set(roles) == {"train", "val"}
        assert spy.read == set(roles["train"]["utt_id"]) | set(roles["val"]["utt_id"])


def test_guard_refuses_tuning_data_with_a_test_utterance_speaker_or_hash(data, classical, monkeypatch):
    import ser.train.cv

    manifest, splits, feats = data
    f0 = splits[splits["fold"] == 0]
    test_row = manifest[manifest["utt_id"] == f0.loc[f0["role"] == "test", "utt_id"].iloc[0]]
    train = manifest[manifest["utt_id"].isin(f0.loc[f0["role"] == "train", "utt_id"])]
    check_test_unseen(train, splits, 0)  # clean
    with pytest.raises(LeakageError, match="test utt_id"):
        check_test_unseen(pd.concat([train, test_row]), splits, 0)
    other_speaker = test_row.assign(utt_id="renamed", sha256="x")
    with pytest.raises(LeakageError, match="test speaker"):
        check_test_unseen(pd.concat([train, other_speaker]), splits, 0)
    same_audio = test_row.assign(utt_id="copy", speaker="syn:99")
    with pytest.raises(LeakageError, match="test sha256"):
        check_test_unseen(pd.concat([train, same_audio]), splits, 0)

    # a faulty fold assignment that slips a test speaker into training is caught before any trial runs
    real = ser.train.cv.fold_roles

    def leaky(*args, **kwargs):
        roles = real(*args, **kwargs)
        roles["train"] = pd.concat([roles["train"], roles["test"].head(1)], ignore_index=True)
        return roles

    monkeypatch.setattr(ser.train.cv, "fold_roles", leaky)
    spy = SpyFeatures(feats)
    with pytest.raises(LeakageError, match="fold 0: test"):
        tune(manifest, splits, classical, spy, CLASSES, space=SVM_SPACE, n_trials=1, sampler="random")
    assert not spy.read


def test_argument_errors(data, classical, tiny_cnn):
    manifest, splits, feats = data
    with pytest.raises(ConfigError, match="required unless the sampler is grid"):
        tune(manifest, splits, classical, feats, CLASSES, space=SVM_SPACE, n_trials=None)
    with pytest.raises(ConfigError, match="unknown sampler"):
        tune(manifest, splits, classical, feats, CLASSES, space=SVM_SPACE, n_trials=1, sampler="cmaes")
    with pytest.raises(ConfigError, match="not an ensemble"):
        tune(manifest, splits, get_recipe("cnn+classical"), feats, CLASSES, space=SVM_SPACE, n_trials=1)
    with pytest.raises(ConfigError, match="float range"):
        tune(manifest, splits, classical, feats, CLASSES, space=SVM_SPACE, n_trials=1, sampler="grid")
    assert Param("k", "int", low=1, high=3).grid_values() == [1, 2, 3]


# ---------------------------------------------------------------------------------------------------------------
# CLI


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    return synth_run_dir(tmp_path_factory.mktemp("synth"), n_speakers=5, per_emotion=1, k=5)


def test_cli_tune_writes_outputs_and_resumes(synth_run, run_cli, tmp_path):
    import yaml

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"train.lr": [0.003, 0.01, 0.03]}))
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(
        yaml.safe_dump(
            {"params": TINY_CNN["params"], "augment": None,
             "train": {"epochs": 2, "batch_size": 8, "crop_frames": 100, "num_threads": 1}}
        )
    )  # fmt: skip
    out = tmp_path / "tune"
    args = ["tune", synth_run / "m" / "manifest.parquet", "--splits", synth_run / "s" / "splits.parquet"]
    args += ["--model", "cnn", "--config", tiny, "--space", space, "--out", out, "--workers", "1"]
    args += ["--val-speakers", "1", "--threads", "1", "--sampler", "grid"]
    code, stdout, err = run_cli(*args, "--trials", "2")
    assert code == 0, err
    assert "trial 1/2" in stdout and "trial 2/2" in stdout and "best" in stdout
    best = json.loads((out / "best_params.json").read_text())
    assert best["trials"]["complete"] == 2 and best["best_params"]["train.lr"] in (0.003, 0.01, 0.03)
    assert yaml.safe_load((out / "best_config.yaml").read_text()) == {"train": {"lr": best["best_params"]["train.lr"]}}
    trials = pd.read_csv(out / "trials.csv")
    assert trials["state"].tolist() == ["complete", "complete"] and trials["value"].notna().all()
    assert (out / "optimization_history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "study.db").is_file()
    # same command with the whole grid: resumes the study and runs only the missing trial
    code, stdout, err = run_cli(*args, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["trials"] == {"target": 3, "complete": 3, "pruned": 0, "failed": 0, "new": 1}
    assert len(summary["val_speakers"]) == 1 and summary["outputs"]["plot"].endswith("optimization_history.png")
    assert len(pd.read_csv(out / "trials.csv")) == 3


def test_cli_help_and_bad_space(synth_run, run_cli, tmp_path):
    code, stdout, _ = run_cli("tune", "--help")
    assert code == 0 and "Example:" in stdout and "--sampler" in stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("params.C: {type: float, low: 10, high: 1}\n")
    base = ["tune", synth_run / "m" / "manifest.parquet", "--splits", synth_run / "s" / "splits.parquet"]
    code, stdout, err = run_cli(*base, "--model", "classical", "--space", bad, "--trials", "2", "--out", tmp_path)
    assert code == 2 and err.startswith("error: ") and "low must be below high" in err and len(err.splitlines()) == 1
    code, _, err = run_cli(*base, "--space", bad, "--trials", "2", "--sampler", "bayes", "--out", tmp_path)
    assert code == 2 and "--sampler must be one of" in err
    code, _, err = run_cli(*base, "--space", tmp_path / "nope.yaml", "--trials", "2", "--out", tmp_path)
    assert code == 2 and "search space not found" in err
    good = tmp_path / "good.yaml"
    good.write_text("params.C: {type: float, low: 0.1, high: 10}\n")
    code, _, err = run_cli(*base, "--model", "classical", "--space", good, "--out", tmp_path)
    assert code == 2 and "--trials is required" in err
    code, _, err = run_cli(*base, "--model", "classical", "--space", good, "--sampler", "grid", "--out", tmp_path)
    assert code == 2 and "params.C is a float range" in err


def test_a_recipe_without_validation_speakers_is_tuned_on_carved_ones(data, classical):
    from ser.train.tune_objective import TUNE_VAL_SPEAKERS, tuning_val_speakers

    manifest, splits, feats = data
    no_val = classical.model_copy(update={"val_speakers": 0})
    assert tuning_val_speakers(no_val) == TUNE_VAL_SPEAKERS and tuning_val_speakers(no_val, 1) == 1
    res = tune(manifest, splits, no_val, feats, CLASSES, fold=0, space=SVM_SPACE, n_trials=1, sampler="random")
    assert len(res.val_speakers) == TUNE_VAL_SPEAKERS and not set(res.val_speakers) & set(res.train_speakers)
