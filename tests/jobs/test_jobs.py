"""The jobs layer: each flow is written once, and the CLI and the pipeline stages get the same results from it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ser.errors import ConfigError, SerError
from ser.jobs.data import IngestJob, SplitJob, ValidateJob, manifest_fingerprint, present_classes
from ser.jobs.evaluate import CVReportJob, load_folds
from ser.jobs.train import CrossValidateJob, FeatureSource, feature_kinds, load_run_inputs, member_specs
from tests.conftest import synth_run_dir


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from ser.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("corpus"), n_speakers=6, per_emotion=2, seed=0)


def test_data_jobs_chain_ingest_validate_split(corpus, tmp_path):
    ingested = IngestJob("ravdess", corpus, tmp_path / "ingest", workers=2).run()
    assert ingested.manifest.is_file() and ingested.summary["files"] == len(ingested.result.manifest)
    validated = ValidateJob(ingested.manifest, tmp_path / "validated").run()
    assert validated.report.is_file() and validated.failures == []
    done = SplitJob(validated.manifest, tmp_path / "split", "kfold", k=3, profile="four").run()
    # the profile's classes that occur, in the profile's order; its manifest is written beside the splits
    assert done.classes == present_classes(done.manifest, "four") == ["neutral", "happy", "sad", "angry"]
    assert pd.read_parquet(done.manifest_path)["emotion"].isin(done.classes).all()
    assert done.fingerprint == manifest_fingerprint(pd.read_parquet(done.manifest_path))
    for _, fold in done.splits.groupby("fold"):
        train = set(fold.loc[fold["role"] == "train", "speaker"])
        assert train and not train & set(fold.loc[fold["role"] == "test", "speaker"])
    counts = done.per_fold()
    assert set(counts.index.get_level_values("role")) == {"train", "test"}


def test_split_job_refuses_a_profile_that_leaves_one_class(corpus, tmp_path):
    ingested = IngestJob("ravdess", corpus, tmp_path / "ingest", workers=2).run()
    frame = ingested.result.manifest
    with pytest.raises(SerError, match="fewer than two classes"):
        SplitJob(frame[frame["emotion"] == "angry"], tmp_path / "split", "kfold", k=2, profile="four").run()


def test_the_cli_split_is_the_split_job(corpus, tmp_path, run_cli):
    ingested = IngestJob("ravdess", corpus, tmp_path / "ingest", workers=2).run()
    code, _, err = run_cli("data", "split", ingested.manifest, "--kfold", "3", "--seed", "4", "--out", tmp_path / "cli")
    assert code == 0, err
    job = SplitJob(ingested.manifest, tmp_path / "job", "kfold", k=3, seed=4).run()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cli" / "splits.parquet"), job.splits)


def test_member_specs_and_feature_kinds_of_an_ensemble():
    from ser.train.recipes import get_recipe

    spec = get_recipe("cnn+crnn+rnn")
    assert [s.name for s in member_specs(spec)] == list(spec.members)
    assert feature_kinds(spec) == ("logmel", "mfcc")
    assert feature_kinds(get_recipe("cnn")) == ("logmel",)


def test_load_run_inputs_rejects_a_profile_without_two_classes(tmp_path):
    root = synth_run_dir(tmp_path, n_speakers=4, per_emotion=1, k=2)
    manifest = pd.read_parquet(root / "m" / "manifest.parquet")
    only = root / "only.parquet"
    manifest[manifest["emotion"] == "sad"].to_parquet(only)
    with pytest.raises(ConfigError, match="fewer than two classes"):
        load_run_inputs(only, root / "s" / "splits.parquet", "ravdess8")


def test_load_folds_names_what_is_missing(tmp_path):
    with pytest.raises(SerError, match="no saved folds"):
        load_folds(tmp_path, "cnn")
    with pytest.raises(SerError, match="missing"):
        load_folds(tmp_path, "cnn", [0, 1])


@pytest.mark.slow
def test_cross_validation_job_gives_the_cli_its_folds_and_report(tmp_path, run_cli):
    from ser.train.recipes import get_recipe

    root = synth_run_dir(tmp_path / "data", n_speakers=6, per_emotion=2, k=3)
    m, s = root / "m" / "manifest.parquet", root / "s" / "splits.parquet"
    code, out, err = run_cli("train", m, "--splits", s, "--model", "classical", "--out", tmp_path / "cli", "--json")
    assert code == 0, err
    cli = json.loads(out)

    frame, splits, classes, _ = load_run_inputs(m, s, "ravdess8")
    spec = get_recipe("classical")
    cv = CrossValidateJob(frame, splits, spec, classes, tmp_path / "job", FeatureSource(tmp_path / "cache")).run()
    assert len(cv.outputs) == 3 == len(load_folds(tmp_path / "job", "classical"))
    for k, o in enumerate(cv.outputs):
        saved = load_folds(tmp_path / "cli", "classical", [k])[0]
        assert o.utt_ids == saved.utt_ids
        np.testing.assert_allclose(o.proba, saved.proba)
    rep = CVReportJob(cv.outputs, frame, classes, "classical", tmp_path / "job" / "report").run()
    assert rep.report.is_file()
    summary = rep.summary()
    assert summary["uar_mean"] == pytest.approx(cli["uar_mean"]) and summary["folds"] == cli["folds"] == 3
