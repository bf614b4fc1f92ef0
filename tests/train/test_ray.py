"""Training on Ray (``train.executor: ray``, :mod:`ser.executor`): for the same seeds a Ray run's folds, predictions
and weights equal a local run's (cross-validation, an ensemble's members side by side, the shipped models), a
fold saved by one is read back by the other, Optuna trials run in parallel against the SQLite study and resume
from it, and features extract as Ray tasks. Every test runs on the session's real local Ray cluster
(``ray_cluster``: 2 CPUs); locally torch has one thread, as each Ray task pins itself to its one CPU."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch

from ser.evaluate.metrics import uar_score
from ser.executor import Executor
from ser.train.cv import cross_validate_members, ensemble_folds, fit_shipped
from ser.train.recipes import get_recipe
from ser.train.spec import EnsembleSpec
from ser.train.tune import tune
from tests.train.test_tune import CLASSES, SVM_SPACE, TINY_CNN, synthetic

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

RUN_FACTS = ("n_params", "best_epoch", "best_val_uar", "epochs_run", "n_train", "n_val", "n_test", "spec")
"""Fold facts that describe the training itself (not its wall time)."""


@pytest.fixture(scope="module")
def data():
    return synthetic(n_speakers=6, per_class=4)


@pytest.fixture(scope="module")
def ray_ex(ray_cluster):
    return Executor("ray", ray_cluster, cpus_per_task=1)


def _tiny(name: str = "tiny", seed: int = 0, epochs: int = 2):
    """The tiny CNN of the tuning tests, without its own thread count (the task's pin is what holds)."""
    spec = get_recipe("cnn", TINY_CNN)
    train = {**spec.train, "epochs": epochs, "num_threads": None}
    return spec.model_copy(update={"name": name, "seed": seed, "train": train})


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path / "last.pt", map_location="cpu", weights_only=False)["model"]


def _assert_same_folds(a, b):
    assert len(a) == len(b)
    for fa, fb in zip(a, b, strict=True):
        assert fa.utt_ids == fb.utt_ids
        np.testing.assert_array_equal(fa.y, fb.y)
        np.testing.assert_array_equal(fa.proba, fb.proba)  # bit for bit, not approximately
        assert uar_score(fa.y, fa.proba.argmax(1)) == uar_score(fb.y, fb.proba.argmax(1))
        assert {k: fa.info.get(k) for k in RUN_FACTS} == {k: fb.info.get(k) for k in RUN_FACTS}


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_cross_validation_on_ray_equals_local(data, ray_ex, tmp_path):
    manifest, splits, feats = data
    spec = _tiny()
    logged = {}

    def log(name, k, out):
        logged.setdefault(name, []).append(k)

    kw = dict(folds=[0, 1, 2], seed=3)
    local = cross_validate_members(manifest, splits, [spec], feats, CLASSES, tmp_path / "local", **kw)["tiny"]
    ray = cross_validate_members(manifest, splits, [spec], feats, CLASSES, tmp_path / "ray", executor=ray_ex, log=log,
                                 **kw)["tiny"]  # fmt: skip
    _assert_same_folds(local, ray)
    assert sorted(logged["tiny"]) == [0, 1, 2]  # each fold reported once, as it finished
    for k in range(3):
        ckpt = f"tiny/fold_{k}_ckpt"
        _assert_same_weights(_weights(tmp_path / "local" / ckpt), _weights(tmp_path / "ray" / ckpt))
        assert (tmp_path / "ray" / "tiny" / f"fold_{k}.npz").is_file()  # saved by the driver as each task ended
    assert local[0].info["device"] == ray[0].info["device"] == "cpu"

    # resumable across executors: a fold saved on Ray is read back locally (not retrained), a missing one reruns
    saved = tmp_path / "ray" / "tiny" / "fold_0.json"
    stamp = saved.stat().st_mtime_ns
    (tmp_path / "ray" / "tiny" / "fold_1.npz").unlink()
    again = cross_validate_members(manifest, splits, [spec], feats, CLASSES, tmp_path / "ray", **kw)["tiny"]
    _assert_same_folds(ray, again)
    assert again[0].info == ray[0].info and saved.stat().st_mtime_ns == stamp  # read back, timings included
    assert (tmp_path / "ray" / "tiny" / "fold_1.npz").is_file()  # the missing fold was computed again


def test_an_ensembles_members_train_side_by_side_on_ray_with_local_results(data, ray_ex, tmp_path):
    manifest, splits, feats = data
    members = [_tiny("m0", seed=0), _tiny("m1", seed=1)]
    ens = EnsembleSpec(name="pair", members=["m0", "m1"])
    kw = dict(folds=[0, 1], seed=0)
    local = cross_validate_members(manifest, splits, members, feats, CLASSES, tmp_path / "local", **kw)
    ray = cross_validate_members(manifest, splits, members, feats, CLASSES, tmp_path / "ray", executor=ray_ex, **kw)
    for m in ("m0", "m1"):
        _assert_same_folds(local[m], ray[m])
    assert not np.array_equal(local["m0"][0].proba, local["m1"][0].proba)  # two members, not one twice
    _assert_same_folds(ensemble_folds([local["m0"], local["m1"]]), ensemble_folds([ray["m0"], ray["m1"]]))

    # the model that ships: each member trained on every speaker, as one Ray task each
    model_l, info_l = fit_shipped(ens, members, manifest, feats, CLASSES, out_dir=tmp_path / "ship_l")
    model_r, info_r = fit_shipped(ens, members, manifest, feats, CLASSES, out_dir=tmp_path / "ship_r", executor=ray_ex)
    _assert_same_weights(model_l.state_dict(), model_r.state_dict())
    assert set(info_r["members"]) == {"m0", "m1"}
    assert {m: i["best_epoch"] for m, i in info_l["members"].items()} == {
        m: i["best_epoch"] for m, i in info_r["members"].items()
    }


def test_a_distilled_recipes_fold_trains_its_teacher_in_its_ray_task_as_locally(data, ray_ex, tmp_path):
    from ser.train.distil import load_teacher
    from ser.train.spec import DistilConfig

    manifest, splits, feats = data
    # the teacher is a recipe name looked up in the task, so it must be one a Ray worker knows (a monkeypatched
    # RECIPES does not reach a worker process): the cnn recipe, made tiny through the teacher's overrides
    tiny = _tiny("teacher")
    overrides = {"params": tiny.params, "augment": tiny.augment, "train": tiny.train}
    student = _tiny("student").model_copy(update={"distil": DistilConfig(teacher="cnn", teacher_overrides=overrides)})
    kw = dict(folds=[0, 1], seed=1)
    local = cross_validate_members(manifest, splits, [student], feats, CLASSES, tmp_path / "local", **kw)["student"]
    ray = cross_validate_members(manifest, splits, [student], feats, CLASSES, tmp_path / "ray", executor=ray_ex,
                                 **kw)["student"]  # fmt: skip
    _assert_same_folds(local, ray)
    for k in (0, 1):
        a = load_teacher(tmp_path / "local" / "student" / f"fold_{k}_teacher")
        b = load_teacher(tmp_path / "ray" / "student" / f"fold_{k}_teacher")  # written by the worker's task
        assert a is not None and b is not None and a.utt_ids == b.utt_ids
        np.testing.assert_array_equal(a.logits, b.logits)  # the teacher trained in the worker as it did here
        assert not set(b.utt_ids) & set(ray[k].utt_ids)  # never on the fold's test rows
        assert ray[k].info["teacher"]["train_speakers"] == local[k].info["teacher"]["train_speakers"]


def test_a_task_error_is_raised_as_itself_and_stops_the_run(data, ray_ex, tmp_path):
    from ser.errors import SerError

    manifest, splits, feats = data
    diverging = _tiny("boom").model_copy(update={"train": {**_tiny().train, "lr": 1e8, "grad_clip": None}})
    with pytest.raises(SerError, match="diverged") as err:
        cross_validate_members(manifest, splits, [diverging], feats, CLASSES, tmp_path, folds=[0], executor=ray_ex)
    assert "\n" not in str(err.value)  # the task's one-line reason, not Ray's remote traceback


def test_optuna_trials_run_in_parallel_on_ray_and_resume_from_the_storage(data, ray_ex, tmp_path):
    manifest, splits, feats = data
    db = tmp_path / "study.db"
    classical = get_recipe("classical")
    kw = dict(space=SVM_SPACE, sampler="tpe", pruner="none", storage=db, study_name="svm", val_speakers=2, seed=1)
    lines: list[str] = []
    first = tune(manifest, splits, classical, feats, CLASSES, n_trials=4, executor=ray_ex, log=lines.append, **kw)
    assert first.n_complete == 4 and first.n_new == 4 and first.n_failed == 0
    assert len(lines) == 4 and all(line.startswith("trial ") for line in lines)  # one line per trial, back here
    stored = optuna.load_study(study_name="svm", storage=f"sqlite:///{db}").get_trials()
    assert sorted(t.number for t in stored) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.value is not None for t in stored)
    assert len({t.params["params.C"] for t in stored}) == 4  # each worker sampled its own point

    # the study resumes from the storage: only the missing trials run, the earlier ones are kept
    second = tune(manifest, splits, classical, feats, CLASSES, n_trials=6, executor=ray_ex, **kw)
    assert second.n_new == 2 and second.n_complete == 6
    assert second.trials["params.C"].tolist()[:4] == first.trials["params.C"].tolist()
    done = tune(manifest, splits, classical, feats, CLASSES, n_trials=6, **kw)  # local: nothing left to do
    assert done.n_new == 0 and done.n_complete == 6

    # torch trials: epochs reported from the worker reach the storage (what a pruner reads)
    space = {"train.lr": [1e-2, 3e-2]}
    res = tune(manifest, splits, _tiny(), feats, CLASSES, space=space, n_trials=None, sampler="grid", pruner="median",
               storage=tmp_path / "cnn.db", executor=ray_ex)  # fmt: skip
    assert res.n_complete == 2 and sorted(res.trials["train.lr"]) == [1e-2, 3e-2]
    assert res.trials["epochs_run"].tolist() == [2, 2]
    reported = optuna.load_study(study_name="tiny-fold0", storage=f"sqlite:///{tmp_path / 'cnn.db'}").trials
    assert all(sorted(t.intermediate_values) == [1, 2] for t in reported)


def test_tuning_on_ray_needs_a_storage(data, ray_ex):
    from ser.errors import ConfigError

    manifest, splits, feats = data
    with pytest.raises(ConfigError, match="needs a study storage"):
        tune(manifest, splits, get_recipe("classical"), feats, CLASSES, space=SVM_SPACE, n_trials=1, executor=ray_ex)


def test_features_extract_as_ray_tasks_with_local_results(ray_ex, tmp_path, monkeypatch):
    import ser.features.extract as extract
    from ser.data.ingest import ingest
    from ser.data.synth import synthesize

    manifest = ingest("ravdess", synthesize(tmp_path / "corpus", n_speakers=2, per_emotion=1, seed=0)).manifest
    manifest = manifest.head(5)
    kinds = ("logmel", "functionals")
    local = extract.extract_manifest(manifest, None, tmp_path / "cache_l", kinds=kinds, workers=1)
    monkeypatch.setattr(extract, "RAY_BATCH", 2)  # three tasks for five files
    ray = extract.extract_manifest(manifest, None, tmp_path / "cache_r", kinds=kinds, executor=ray_ex)
    assert list(ray.features) == list(local.features) and len(ray.features) == 5 and not ray.failures
    for u in local.features:
        for k in kinds:
            np.testing.assert_array_equal(ray.features[u][k], local.features[u][k])
    assert ray.misses == local.misses and (tmp_path / "cache_r").is_dir()  # the workers filled the cache
    cached = extract.extract_manifest(manifest, None, tmp_path / "cache_r", kinds=kinds, executor=ray_ex)
    assert not cached.misses and sum(cached.hits.values()) > 0


def test_ser_train_on_ray_prints_the_local_metrics(ray_cluster, run_cli, tmp_path_factory):
    import json

    from tests.conftest import synth_run_dir

    root = synth_run_dir(tmp_path_factory.mktemp("cli"), n_speakers=6, per_emotion=1, k=2)
    args = ("train", root / "m" / "manifest.parquet", "--splits", root / "s" / "splits.parquet", "--model", "classical",
            "--threads", "1", "--workers", "1", "--json")  # fmt: skip
    code, out, err = run_cli(*args, "--out", root / "local")
    assert code == 0, err
    code, out_ray, err = run_cli(*args, "--out", root / "ray", "--executor", "ray", "--ray-address", ray_cluster)
    assert code == 0, err
    local, ray = json.loads(out), json.loads(out_ray)
    assert ray["folds"] == local["folds"] == 2 and ray["uar_mean"] == local["uar_mean"]
    code, _, err = run_cli(*args, "--out", root / "bad", "--executor", "spark")
    assert code == 2 and err.strip() == "error: --executor must be one of local, ray, got 'spark'"
