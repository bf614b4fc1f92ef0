"""The default-recipe rule (benchmarks/default_recipe.py) and the hand-over of robustness folds to the 6-fold
protocol's run folder (benchmarks/robustness.py): pure parts and file formats, no training."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    loaded = {name: importlib.import_module(name) for name in ("default_recipe", "robustness")}
    yield loaded
    for name in loaded:
        sys.modules.pop(name, None)


def test_the_rule_takes_the_best_mean_within_the_serving_budget(bench):
    dr = bench["default_recipe"]
    mean = {"cnn": 0.40, "cnn-robust": 0.56, "cnn-robust-vad": 0.58, "ensemble": 0.60}
    ms = {"cnn": 7.9, "cnn-robust": 7.9, "cnn-robust-vad": 8.4, "ensemble": 24.9}
    assert dr.choose(mean, ms) == "cnn-robust-vad"  # the ensemble is better but over 10 ms
    assert dr.choose(mean, ms, limit_ms=30.0) == "ensemble"
    assert dr.choose(mean, {**ms, "cnn-robust-vad": 10.5}) == "cnn-robust"
    with pytest.raises(SystemExit, match="no recipe serves"):
        dr.choose(mean, ms, limit_ms=1.0)
    # clean speech: the first recipe is the baseline; a candidate more than 2 points under it is passed over
    clean = {"cnn": 0.641, "cnn-robust": 0.641, "cnn-robust-vad": 0.587, "ensemble": 0.70}
    assert dr.choose(mean, ms, clean) == "cnn-robust"
    assert dr.choose(mean, ms, {**clean, "cnn-robust-vad": 0.621}) == "cnn-robust-vad"  # exactly 2 points: kept
    assert dr.choose(mean, ms, clean, max_clean_loss=0.1) == "cnn-robust-vad"


def test_a_screen_of_augmented_candidates_is_held_to_the_records_clean_baseline(bench):
    dr = bench["default_recipe"]

    def run(*recipes, folds=(0, 1, 2, 3, 4, 5)):  # (name, robust, clean UAR) in order
        return {"scores": {n: {"clean": {"uar": u}} for n, _, u in recipes},
                "recipes": {n: {"robust": r} for n, r, _ in recipes},
                "folds": list(folds), "conditions": ["clean", "telephone"], "test_seed": 7, "cut": None}  # fmt: skip

    record = run(("cnn", None, 0.639), ("cnn-robust", {"n_variants": 1}, 0.622))
    screen = run(("cnn-robust-noisy-long", {"n_variants": 2}, 0.641), ("cnn-distil-robust", {"n_variants": 2}, 0.654))
    assert dr.clean_baseline({"screen.json": screen, "robustness.json": record}) == {
        "recipe": "cnn", "clean_uar": 0.639, "from": "robustness.json"}  # fmt: skip
    assert dr.clean_baseline({"robustness.json": record})["from"] == "robustness.json"
    vad = run(("cnn", None, 0.641), ("cnn-robust-vad", {"n_variants": 1}, 0.587))
    assert dr.clean_baseline({"vad.json": vad, "robustness.json": record})["clean_uar"] == 0.641  # its own first
    with pytest.raises(SystemExit, match="no baseline without augmentation"):
        dr.clean_baseline({"screen.json": screen, "robustness.json": None})
    # a screen on other folds is not held to the record's clean UAR: other test actors
    cut = run(("cnn-robust-noisy-long", {"n_variants": 2}, 0.70), folds=(0, 1, 2))
    with pytest.raises(SystemExit, match="another protocol \\(folds differ\\)"):
        dr.clean_baseline({"screen.json": cut, "robustness.json": record})


def test_the_mean_is_over_the_named_conditions_only(bench):
    dr = bench["default_recipe"]
    scores = {"clean": {"uar": 0.7}, "telephone": {"uar": 0.5}, "noise-10db:factory1|clean trim": {"uar": 0.0}}
    assert dr.mean_uar(scores, ["clean", "telephone"]) == pytest.approx(0.6)
    with pytest.raises(SystemExit, match="reverb"):
        dr.mean_uar(scores, ["clean", "reverb:0.7@7"])


def test_cross_corpus_rows_skip_cut_runs(bench, tmp_path):
    dr = bench["default_recipe"]
    row = {
        "train_corpora": ["ravdess"],
        "test_corpora": ["emodb"],
        "adaptation": "none",
        "uar": 0.41,
        "ci": {"uar": {"low": 0.35, "high": 0.47}},
    }
    path = tmp_path / "cc.json"
    path.write_text(json.dumps({"neural": {"cnn-robust": {"cut": {"epochs": 1}, "cross_corpus": [row]}}}))
    assert dr.cross_corpus_rows("cnn-robust", path) == []
    joint = {"train_corpora": ["ravdess", "emodb"], "test_corpus": "emodb", "uar": 0.6,
             "ci": {"uar": {"low": 0.5, "high": 0.7}}}  # fmt: skip
    path.write_text(json.dumps({"neural": {"cnn-robust": {"cut": None, "cross_corpus": [row], "joint": [joint]}}}))
    assert dr.cross_corpus_rows("cnn-robust", path) == [
        {"train": "ravdess", "test": "emodb", "adaptation": "none", "uar": 0.41, "uar_ci": [0.35, 0.47]},
        {"train": "ravdess+emodb", "test": "emodb", "adaptation": "joint", "uar": 0.6, "uar_ci": [0.5, 0.7]},
    ]
    assert dr.cross_corpus_rows("cnn", path) == [] and dr.cross_corpus_rows("cnn", tmp_path / "none.json") == []
    recorded = {"chosen": "cnn-robust", "candidates": [{"recipe": "cnn-robust"}], "cross_corpus": []}
    refreshed = dr.refresh_cross_corpus(recorded, path)
    assert refreshed["cross_corpus"] == dr.cross_corpus_rows("cnn-robust", path) and len(refreshed["cross_corpus"]) == 2
    assert {k: v for k, v in refreshed.items() if k != "cross_corpus"} == {
        k: v for k, v in recorded.items() if k != "cross_corpus"
    }


def test_the_pipeline_config_uses_the_recorded_default():
    recorded = ROOT / "benchmarks" / "results" / "default_recipe.json"
    if not recorded.is_file():
        pytest.skip("the default-recipe rule has not been run yet")
    chosen = json.loads(recorded.read_text())["chosen"]
    config = yaml.safe_load((ROOT / "configs" / "ravdess.yaml").read_text())
    assert config["train"]["model"] == chosen


def test_a_full_robustness_fold_is_handed_to_the_cv_protocol(bench, tmp_path, monkeypatch):
    from ser.models.factory import build_model, save_model
    from ser.train.cv import load_fold
    from ser.train.recipes import get_recipe

    rob = bench["robustness"]
    monkeypatch.setattr(rob, "CV_RUNS", tmp_path / "cv")
    monkeypatch.setattr(rob, "HERE", tmp_path)
    spec = get_recipe("cnn-robust")
    fold = tmp_path / "robustness" / "full" / spec.name / "fold_2"
    fold.mkdir(parents=True)
    save_model(fold / "model.pt", build_model("cnn", 8, 64, **spec.params), {"spec": spec.fingerprint()})
    info = {"seconds": 10.0, "n_train": 3, "n_train_variants": 6, "epochs_run": 15, "test_speakers": ["t"]}
    (fold / "train.json").write_text(json.dumps(info))
    roles = {"val": pd.DataFrame({"speaker": pd.Series([], dtype=str)})}
    rob.save_cv_fold(spec, 2, fold, roles)
    assert load_fold(tmp_path / "cv", spec.name, 2) is None  # no clean predictions yet: nothing handed over
    proba = np.full((2, 8), 1 / 8)
    np.savez(fold / "clean.npz", proba=proba, y=np.array([0, 1]), utt_ids=np.array(["a", "b"]))
    rob.save_cv_fold(spec, 2, fold, roles)
    out = load_fold(tmp_path / "cv", spec.name, 2)
    assert out is not None and out.utt_ids == ["a", "b"] and np.array_equal(out.proba, proba)
    assert out.info["spec"] == spec.fingerprint() and out.info["n_train_variants"] == 6
    assert out.info["n_params"] > 0 and out.info["trained_by"].startswith("benchmarks/robustness.py")
    # a fold adopted from a cross-validation run is not handed back to it
    (fold / "train.json").write_text(json.dumps({**info, "adopted_from": "runs/ray_cv/ray/cnn/fold_2"}))
    other = tmp_path / "robustness" / "full" / spec.name / "fold_3"
    other.mkdir()
    for f in ("model.pt", "train.json", "clean.npz"):
        (other / f).write_bytes((fold / f).read_bytes())
    rob.save_cv_fold(spec, 3, other, roles)
    assert load_fold(tmp_path / "cv", spec.name, 3) is None


def test_no_cv_fold_to_adopt_means_training(bench, tmp_path, monkeypatch):
    from ser.train.recipes import get_recipe

    rob = bench["robustness"]
    monkeypatch.setattr(rob, "ADOPT_FROM", (tmp_path / "nothing",))
    roles = {r: pd.DataFrame({"speaker": ["a"]}) for r in ("train", "val")}
    assert rob.adopt_cv_fold(get_recipe("cnn"), 0, roles, 10, tmp_path / "fold_0" / "ckpt", 0) is None
    assert not (tmp_path / "fold_0" / "ckpt").exists()


def test_the_section_names_the_clean_baseline_and_reads_records_written_before_it(bench, tmp_path, monkeypatch):
    dr = bench["default_recipe"]
    sections: list[str] = []
    monkeypatch.setattr(dr, "RESULTS_JSON", tmp_path / "d.json")
    monkeypatch.setattr(dr, "replace_section", lambda heading, text: sections.append(text))
    cand = {"recipe": "cnn", "mean_uar": 0.35, "clean_uar": 0.639, "clean_loss": 0.0, "serve_ms": 4.0,
            "serving_path_ms": 4.6, "within_budget": True, "keeps_clean": True, "eligible": True}  # fmt: skip
    old = {"machine": "m", "date": "d", "robustness_file": "robustness.json", "robustness_run": "r", "limit_ms": 10.0,
           "load_before_timing": 0.1, "max_clean_loss": 0.02, "robustness_cut": None, "chosen": "cnn",
           "candidates": [cand], "cross_corpus": []}  # fmt: skip
    dr.write_results(old)  # no clean_baseline field: the first candidate was the baseline
    baseline = {"recipe": "cnn", "clean_uar": 0.5, "from": "robustness.json"}
    dr.write_results({**old, "robustness_file": "robustness_screen_x.json", "clean_baseline": baseline})
    assert "(`cnn`, 63.9 % clean UAR in `robustness.json`)" in sections[0]
    assert "(`cnn`, 50.0 % clean UAR in `robustness.json`)" in sections[1] and "robustness_screen_x.json" in sections[1]


def test_a_robustness_fold_is_read_back_only_whole_and_trains_with_the_cv_seed(bench, tmp_path, monkeypatch):
    import ser.train.cv as cv
    from ser.models.factory import build_model, save_model
    from ser.train.recipes import get_recipe

    rob = bench["robustness"]
    spec = get_recipe("cnn-s1")
    fold = tmp_path / "fold_2"
    fold.mkdir()
    save_model(fold / "model.pt", build_model("cnn", 8, 64, **spec.params), {"spec": spec.fingerprint()})

    class Trains(Exception):
        pass

    def fold_inputs(*a, **kw):
        raise Trains

    monkeypatch.setattr(cv, "fold_inputs", fold_inputs)
    with pytest.raises(Trains):  # a model without its facts: killed between the two writes, trained again
        rob._train_fold(spec, 2, {}, {}, [], None, fold, seed=3)
    (fold / "train.json").write_text(json.dumps({"epochs_run": 40}))
    assert rob._train_fold(spec, 2, {}, {}, [], None, fold, seed=3)[1] == {"epochs_run": 40}

    seeds = []
    monkeypatch.setattr(rob, "_train_fold", lambda *a, seed: seeds.append(seed) or (None, {}))
    monkeypatch.setattr(rob, "_predict", lambda *a: np.full((1, 8), 1 / 8))
    args = argparse.Namespace(workers=1)
    roles = {"test": pd.DataFrame({"utt_id": ["u"], "emotion": ["neutral"], "path": ["p"], "sha256": ["s"]})}
    classes = ["neutral", *[f"c{i}" for i in range(7)]]
    rob._score_conditions(spec, 2, roles, {"u": {}}, classes, args, fold, [("clean", False)])
    assert spec.seed == 1 and seeds == [3]  # ser.train.cv's seed for fold 2 of a seed-1 recipe: spec.seed + k
    got = np.load(fold / "clean.npz")
    assert got["proba"].shape == (1, 8) and list(got["utt_ids"]) == ["u"] and not list(fold.glob(".*.tmp"))
