"""Seed ensembles and the recipe options that lifted RAVDESS UAR: mixup, training without validation speakers,
spec fingerprints (a changed recipe reruns its folds), the one-module Ensemble (save/load, ONNX), and an ensemble
recipe through ``fit_shipped`` and the pipeline, an ensemble whose members read different features (log-mel and
MFCC stacked in one input)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ser.errors import ConfigError, SerError
from ser.features import FeatureConfig
from ser.model_folder import Preprocessing, frame_input, input_kinds
from ser.models import build_model, load_model, save_model
from ser.models.ensemble import Ensemble
from ser.train import TrainConfig, fit
from ser.train.cv import cross_validate, fit_shipped, load_frame_features
from ser.train.recipes import RECIPES, get_recipe, members
from ser.train.spec import EnsembleSpec, ModelSpec
from ser.train.trainer import mixup_batch
from tests.train.test_trainer import cfg, toy

TINY = dict(channels=[8, 16], convs=[1, 1], time_pool=[2, 2], pool="attentive_stats")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------------------------------------
# mixup


def test_mixup_blends_inputs_targets_and_lengths():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    lengths, y = torch.tensor([4, 2]), torch.tensor([0, 1])
    xm, lm, y2, lam = mixup_batch(x, lengths, y, 0.4, np.random.default_rng(3))
    rng = np.random.default_rng(3)  # the same draws, in the same order
    lam_ref = float(rng.beta(0.4, 0.4))
    perm = torch.as_tensor(rng.permutation(2))
    assert lam == pytest.approx(lam_ref) and 0.0 < lam < 1.0
    torch.testing.assert_close(xm, lam_ref * x + (1 - lam_ref) * x[perm])
    assert torch.equal(y2, y[perm])
    assert torch.equal(lm, torch.maximum(lengths, lengths[perm]))


def test_mixup_training_learns_and_resumes_exactly(tmp_path):
    train, val = toy(64, 0), toy(24, 1)
    config = cfg(epochs=8, mixup=0.4, patience=None)
    res = fit(train, val, config, tmp_path / "a")
    assert res.best_val_uar >= 0.6  # chance 0.25
    plain = fit(train, val, cfg(epochs=8, patience=None))
    assert [h["train_loss"] for h in res.history] != [h["train_loss"] for h in plain.history]

    def crash(record):
        if record["epoch"] == 3:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        fit(train, val, config, tmp_path / "b", on_epoch=crash)
    resumed = fit(train, val, config, tmp_path / "b", resume=True)
    assert [dict(h) for h in resumed.history] == [dict(h) for h in res.history]
    with pytest.raises(ConfigError, match="mixup"):
        TrainConfig.from_dict({"mixup": -1.0})


def test_without_validation_the_last_epoch_is_kept():
    res = fit(toy(32, 0), None, cfg(epochs=3))
    assert res.best_epoch == 3 and res.best_val_uar is None and res.epochs_run == 3


# ----------------------------------------------------------------------------------------------------------------
# the Ensemble module


def _members(n: int = 2) -> list:
    return [build_model("cnn", 4, 12, seed=s, **TINY).eval() for s in range(n)]


def test_ensemble_output_is_the_log_of_weighted_mean_probabilities():
    ms = _members(2)
    ens = Ensemble.of(ms, weights=[3.0, 1.0])
    x, lengths = torch.randn(3, 12, 50), torch.tensor([50, 30, 41])
    with torch.no_grad():
        want = (3 * torch.softmax(ms[0](x, lengths), 1) + torch.softmax(ms[1](x, lengths), 1)) / 4
        got = torch.softmax(ens(x, lengths), 1)
        torch.testing.assert_close(got, want)
        # padding does not change a clip's output
        torch.testing.assert_close(ens(x[1:2, :, :30]), ens(x, lengths)[1:2], atol=1e-5, rtol=1e-4)
        assert ens.embed(x, lengths).shape[1] == sum(m.embed(x, lengths).shape[1] for m in ms)
    assert ens.n_params() == sum(m.n_params() for m in ms)


def test_ensemble_saves_loads_and_rejects_bad_members(tmp_path):
    ens = Ensemble.of(_members(3))
    save_model(tmp_path / "e.pt", ens, {"classes": list("abcd")})
    back, extra = load_model(tmp_path / "e.pt")
    x = torch.randn(2, 12, 40)
    with torch.no_grad():
        torch.testing.assert_close(back(x), ens(x))
    assert extra["classes"] == list("abcd") and len(back.members) == 3
    assert "rows" not in ens.hparams  # members on one input: the parameters earlier versions wrote and load
    with pytest.raises(ConfigError, match="at least two"):
        build_model("ensemble", 4, 12, members=[{"name": "cnn", "params": TINY}])
    with pytest.raises(ConfigError, match="weights"):
        build_model("ensemble", 4, 12, members=[{"name": "cnn", "params": TINY}] * 2, weights=[1.0])
    with pytest.raises(ConfigError, match="frame models"):
        build_model("ensemble", 4, 12, members=[{"name": "cnn", "params": TINY}, {"name": "classical"}])
    with pytest.raises(ConfigError, match="share"):
        Ensemble.of([build_model("cnn", 4, 12, **TINY), build_model("cnn", 5, 12, **TINY)])


def test_ensemble_members_read_their_own_rows_of_a_stacked_input(tmp_path):
    cnn = build_model("cnn", 4, 12, seed=0, **TINY).eval()
    rnn = build_model("rnn", 4, 9, seed=1, hidden=8, layers=1, head_hidden=8, frame_pool=3).eval()
    ens = Ensemble.of([cnn, rnn], rows=[[0, 12], [12, 21]])
    assert ens.n_features == 21 and ens.hparams["rows"] == [[0, 12], [12, 21]]
    x, lengths = torch.randn(3, 21, 40), torch.tensor([40, 25, 31])
    with torch.no_grad():
        want = (torch.softmax(cnn(x[:, :12], lengths), 1) + torch.softmax(rnn(x[:, 12:], lengths), 1)) / 2
        torch.testing.assert_close(torch.softmax(ens(x, lengths), 1), want)
        torch.testing.assert_close(ens(x[1:2, :, :25]), ens(x, lengths)[1:2], atol=1e-5, rtol=1e-4)
    save_model(tmp_path / "e.pt", ens, {"classes": list("abcd")})
    back, _ = load_model(tmp_path / "e.pt")
    with torch.no_grad():
        torch.testing.assert_close(back(x, lengths), ens(x, lengths))
    with pytest.raises(ConfigError, match="share n_features"):
        Ensemble.of([cnn, rnn])
    with pytest.raises(ConfigError, match="span its n_features"):
        Ensemble.of([cnn, rnn], rows=[[0, 12], [12, 20]])
    with pytest.raises(ConfigError, match="one \\[start, stop\\) range"):
        build_model("ensemble", 4, 21, members=[{"name": "cnn", "params": TINY}] * 2, rows=[[0, 12], [12, 30]])
    with pytest.raises(ConfigError, match="expected input"):
        ens(torch.randn(1, 12, 40))


def test_card_names_each_members_rows_when_members_read_different_features():
    from ser.card import _architecture

    two_cnns = {"name": "ensemble", "n_params": 10, "params": {"members": [{"name": "cnn", "params": {}}] * 2}}
    assert "an ensemble of 2 `cnn` models" in _architecture(two_cnns)
    two_cnns["params"]["rows"] = [[0, 64], [64, 124]]  # one on log-mel, one on MFCC: say so
    assert "`cnn` on input rows 0-63, `cnn` on input rows 64-123" in _architecture(two_cnns)


def test_frame_input_trims_once_pads_each_kind_and_stacks():
    rng = np.random.default_rng(0)
    logmel = rng.normal(-30, 5, (4, 10)).astype(np.float32)
    logmel[:, :2] = -100.0  # quiet lead-in, trimmed at 40 dB
    mfcc = rng.normal(0, 1, (3, 10)).astype(np.float32)
    feats = {"logmel": logmel, "mfcc": mfcc}
    x = frame_input(feats, "logmel+mfcc", 40.0)
    np.testing.assert_array_equal(x, np.concatenate([logmel[:, 2:], mfcc[:, 2:]]))
    np.testing.assert_array_equal(frame_input(feats, "mfcc", 40.0), mfcc[:, 2:])  # a single kind, as before
    np.testing.assert_array_equal(frame_input(feats, "mfcc+logmel", None)[:3], mfcc)  # rows in the named order
    padded = frame_input(feats, "logmel+mfcc", 40.0, min_frames=12)
    assert padded.shape == (7, 12)
    assert np.all(padded[:4, 8:] == logmel[:, 2:].min()) and np.all(padded[4:, 8:] == mfcc[:, 2:].min())
    assert input_kinds("logmel+mfcc") == ("logmel", "mfcc")
    for bad in ("logmel+logmel", "mel", "logmel+", "functionals"):
        with pytest.raises(ConfigError, match="frame kinds"):
            input_kinds(bad)
    with pytest.raises(SerError, match=r"metadata\.json"):
        Preprocessing.from_metadata({"input": {"kind": "logmel+wav", "feature_config": FeatureConfig().to_dict()}})


def test_ensemble_exports_to_onnx_with_parity(tmp_path):
    from ser.export import write_model_folder
    from ser.inference import Predictor
    from ser.model_folder import read_metadata

    ens = Ensemble.of([build_model("cnn", 8, 64, seed=s, **TINY).eval() for s in range(2)])
    rng = np.random.default_rng(0)
    inputs = [rng.normal(-40, 10, (64, t)).astype(np.float32) for t in (80, 150)]
    out = write_model_folder(
        tmp_path / "m", ens, labels=[f"c{i}" for i in range(8)], feature_config=FeatureConfig(), parity_inputs=inputs
    )
    assert read_metadata(out)["export"]["parity_max_abs_diff"] < 1e-4
    t = np.linspace(0, 1.5, 24000, endpoint=False)
    res = Predictor(out).predict(0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32))
    assert abs(sum(res.probabilities.values()) - 1.0) < 1e-4


# ----------------------------------------------------------------------------------------------------------------
# recipes


def test_shipped_recipes_and_ensemble_overrides():
    cnn = RECIPES["cnn"]
    for name in ("cnn", "crnn", "rnn"):  # what the GPU sweeps found: all speakers for training, per-clip norm
        assert RECIPES[name].val_speakers == 0 and RECIPES[name].params["input_norm"] == "utterance"
    assert RECIPES["rnn"].params["frame_pool"] == 3
    x3 = RECIPES["cnn-x3"]
    assert isinstance(x3, EnsembleSpec)
    specs = members([x3])
    assert [s.seed for s in specs] == [0, 1, 2]
    assert len({s.fingerprint() for s in specs}) == 3
    # only the seed (and name) differ between the members
    dumps = [{k: v for k, v in s.model_dump().items() if k not in ("seed", "name")} for s in specs]
    assert dumps[0] == dumps[1] == dumps[2]
    tuned = get_recipe("cnn-x3", {"train": {"epochs": 7}, "weights": [1, 1, 2]})
    assert tuned.weights == [1, 1, 2]
    assert {s.train["epochs"] for s in members([tuned])} == {7}
    assert {s.train["lr"] for s in members([tuned])} == {cnn.train["lr"]}  # merged, not replaced
    spelled_out = get_recipe("cnn-x3", {"overrides": {"train": {"epochs": 7}}, "weights": [1, 1, 2]})
    assert spelled_out == tuned
    both = get_recipe("cnn-x3", {"train": {"epochs": 7}, "overrides": {"train": {"lr": 1e-3}}})
    assert both.overrides["train"] == {"epochs": 7, "lr": 1e-3}  # merged key by key, nothing lost
    assert members([both])[0].train == {**cnn.train, "epochs": 7, "lr": 1e-3}
    with pytest.raises(ConfigError, match="overrides must be a mapping"):
        get_recipe("cnn-x3", {"overrides": None})
    with pytest.raises(ConfigError, match="recipe cnn: params"):
        members([get_recipe("cnn-x3", {"params": "wide"})])
    with pytest.raises(ConfigError, match="not a model recipe"):
        members([EnsembleSpec(name="bad", members=["cnn-x3", "cnn"])])


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from tests.conftest import synth_run_dir

    root = synth_run_dir(tmp_path_factory.mktemp("ens"), n_speakers=6, per_emotion=3, k=3)
    manifest = pd.read_parquet(root / "m" / "manifest.parquet")
    splits = pd.read_parquet(root / "s" / "splits.parquet")
    feats = load_frame_features(manifest, ("logmel",), cache_dir=root / "cache", workers=1)
    return manifest, splits, feats, sorted(manifest["emotion"].unique())


def _small(seed: int = 0, **train) -> ModelSpec:
    base = RECIPES["cnn-small"]
    return base.model_copy(
        update={"name": f"small-s{seed}", "seed": seed, "train": {**base.train, "epochs": 2, **train}}
    )


@pytest.mark.slow
def test_a_changed_spec_reruns_its_folds_and_an_unchanged_one_is_read_back(synth, tmp_path):
    manifest, splits, feats, classes = synth
    first = cross_validate(manifest, splits, _small(), feats, classes, tmp_path, folds=[0])
    again = cross_validate(manifest, splits, _small(), feats, classes, tmp_path, folds=[0])
    assert again[0].info == first[0].info  # read back (timings included), not retrained
    assert first[0].info["device"] == "cpu"
    # where it ran is not part of the recipe: a fold trained elsewhere (a GPU sweep) counts, and says where
    elsewhere = _small(device="cuda")
    assert elsewhere.fingerprint() == _small().fingerprint()
    assert _small().model_copy(update={"name": "renamed"}).fingerprint() == _small().fingerprint()
    again = cross_validate(manifest, splits, _small(device="cpu", num_threads=1), feats, classes, tmp_path, folds=[0])
    assert again[0].info == first[0].info
    changed = cross_validate(manifest, splits, _small(lr=1e-3), feats, classes, tmp_path, folds=[0])
    assert changed[0].info["spec"] != first[0].info["spec"]
    assert not np.array_equal(changed[0].proba, first[0].proba)


@pytest.mark.slow
def test_fit_shipped_joins_ensemble_members_without_validation(synth, tmp_path):
    manifest, _, feats, classes = synth
    specs = [_small(s).model_copy(update={"val_speakers": 0}) for s in (0, 1)]
    ens = EnsembleSpec(name="pair", members=[s.name for s in specs])
    model, info = fit_shipped(ens, specs, manifest, feats, classes, out_dir=tmp_path)
    assert isinstance(model, Ensemble) and len(model.members) == 2
    assert set(info["members"]) == {"small-s0", "small-s1"} and info["best_val_uar"] is None
    assert info["n_val"] == 0 and (tmp_path / "small-s1" / "last.pt").is_file()
    mixed = [specs[0], RECIPES["classical"]]
    with pytest.raises(ConfigError, match="torch frame model with the same trimming"):
        fit_shipped(EnsembleSpec(name="m", members=["small-s0", "classical"]), mixed, manifest, feats, classes)
    untrimmed = [specs[0], specs[1].model_copy(update={"trim_db": None})]
    with pytest.raises(ConfigError, match="same trimming"):
        fit_shipped(ens, untrimmed, manifest, feats, classes)
    windowed = [specs[0], specs[1].model_copy(update={"train": {**specs[1].train, "eval_mode": "windows"}})]
    with pytest.raises(ConfigError, match="evaluate the same way"):  # refused before any training
        fit_shipped(ens, windowed, manifest, feats, classes, out_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_eval_settings_of_a_windowed_recipe_are_plain_numbers():
    import json

    from ser.train.spec import eval_settings as _eval_settings

    got = _eval_settings(TrainConfig.from_dict({"eval_mode": "windows", "crop_frames": 200}))
    assert got == {"eval_mode": "windows", "eval_window": 200, "eval_hop": None}
    json.dumps(got)  # goes into the train stage's JSON record


def _small_rnn(**train) -> ModelSpec:
    base = RECIPES["rnn"]
    return base.model_copy(
        update={
            "name": "small-rnn",
            "params": {**base.params, "hidden": 16, "layers": 1, "head_hidden": 16, "input_norm": "batch"},
            "train": {**RECIPES["cnn-small"].train, "epochs": 2, **train},
        }
    )


@pytest.mark.slow
def test_fit_shipped_joins_members_on_different_features(synth, tmp_path):
    manifest, _, _, classes = synth
    feats = load_frame_features(manifest, ("logmel", "mfcc"), cache_dir=tmp_path / "cache", workers=1)
    specs = [_small(0).model_copy(update={"val_speakers": 0}), _small_rnn().model_copy(update={"val_speakers": 0})]
    ens = EnsembleSpec(name="views", members=[s.name for s in specs])
    model, info = fit_shipped(ens, specs, manifest, feats, classes, out_dir=tmp_path / "ckpt")
    assert info["input"] == {"kind": "logmel+mfcc", "trim": "level", "trim_db": 40.0}
    assert model.hparams["rows"] == [[0, 64], [64, 124]] and model.n_features == 124
    u = manifest["utt_id"].iloc[0]
    x = frame_input(feats[u], "logmel+mfcc", 40.0)
    with torch.no_grad():  # each member sees exactly what it trained on
        cnn_alone = torch.softmax(model.members[0](torch.from_numpy(frame_input(feats[u], "logmel", 40.0)[None])), 1)
        rnn_alone = torch.softmax(model.members[1](torch.from_numpy(frame_input(feats[u], "mfcc", 40.0)[None])), 1)
        torch.testing.assert_close(torch.softmax(model(torch.from_numpy(x[None])), 1), (cnn_alone + rnn_alone) / 2)


@pytest.mark.slow
@pytest.mark.parametrize("views", [False, True], ids=["seeds", "cnn+rnn"])
def test_pipeline_ships_an_ensemble_recipe(tmp_path, monkeypatch, views):
    from ser import registry
    from ser.inference import Predictor
    from ser.model_folder import read_metadata
    from ser.pipeline import run
    from ser.pipeline.config import parse_config

    small = RECIPES["cnn-small"]
    for s in (0, 1):
        monkeypatch.setitem(RECIPES, f"small-s{s}", small.model_copy(update={"name": f"small-s{s}", "seed": s}))
    second = "small-s1"
    if views:  # two architectures on two feature kinds: log-mel for the cnn, MFCC for the rnn
        second = "small-rnn"
        monkeypatch.setitem(RECIPES, second, _small_rnn().model_copy(update={"val_speakers": 1}))
    monkeypatch.setitem(RECIPES, "small-x2", EnsembleSpec(name="small-x2", members=["small-s0", second]))
    cfg = parse_config(
        {
            "data": {"synth_speakers": 8, "synth_per_emotion": 3},
            "split": {"k": 2},
            "evaluate": {"n_boot": 50},
            "train": {"model": "small-x2", "overrides": {"train": {"epochs": 6}}},
            "register": {"max_group_gap": None},
        }
    )
    summary = run(cfg, tmp_path)
    assert summary.ok, summary.to_dict()
    model_dir = registry.resolve(tmp_path, "ser-emotion@champion")
    meta = read_metadata(model_dir)
    assert meta["recipe"]["name"] == "small-x2" and meta["recipe"]["members"] == ["small-s0", second]
    assert meta["export"]["parity_max_abs_diff"] < 1e-3
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert "silence trimmed at 40.0 dB below the loudest frame" in card
    if views:
        assert meta["input"]["kind"] == "logmel+mfcc" and meta["input"]["shape"][1] == 124
        assert "`cnn` on input rows 0-63, `rnn` on input rows 64-123" in card and "`logmel+mfcc`" in card
    else:
        assert meta["input"]["kind"] == "logmel" and "an ensemble of 2 `cnn` models" in card
    cv = Path(summary.record("train")["outputs"]["cv"])
    fused = np.load(cv / "small-x2" / "fold_0.npz")["proba"]
    parts = [np.load(cv / m / "fold_0.npz")["proba"] for m in ("small-s0", second)]
    np.testing.assert_allclose(fused, (parts[0] + parts[1]) / 2, rtol=1e-6)
    t = np.linspace(0, 2, 32000, endpoint=False)
    assert Predictor(model_dir).predict(0.3 * np.sin(2 * np.pi * 200 * t).astype(np.float32)).label in meta["labels"]
