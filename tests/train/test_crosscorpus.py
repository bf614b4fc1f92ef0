"""Cross-corpus evaluation: shared label profile, one train → test fold, leakage guard, report, CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ser.errors import LeakageError, SerError
from ser.train.crosscorpus import align, cross_corpus_splits


@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory):
    """Two synthetic corpora with disjoint speakers, the second renamed as another corpus."""
    from ser.data.ingest import ingest
    from ser.data.synth import synthesize

    root = tmp_path_factory.mktemp("xc")
    a = ingest("ravdess", synthesize(root / "a", n_speakers=6, per_emotion=3, seed=0)).manifest
    b = ingest("ravdess", synthesize(root / "b", n_speakers=4, per_emotion=3, seed=1)).manifest
    b = b.assign(corpus="synth-b", speaker=b["speaker"].astype(str).str.replace("synthetic:", "synth-b:"))
    b["utt_id"] = "b/" + b["utt_id"].astype(str)
    return root, a, b


def test_align_keeps_shared_classes_and_counts_the_rest(two_corpora):
    _, a, b = two_corpora
    b4 = b[b["emotion"].isin(["angry", "sad", "neutral"])]
    tr, te, classes, dropped = align(a, b4, "four")
    assert set(classes) == {"neutral", "sad", "angry"}
    assert set(tr["emotion"]) == set(te["emotion"]) == set(classes)
    assert dropped["train_only_classes"] == int((a["emotion"] == "happy").sum())
    assert dropped["train"]  # the labels 'four' does not cover (fearful, disgust, surprised) are counted
    with pytest.raises(SerError, match="fewer than two classes"):
        align(a[a["emotion"] == "angry"], b, "four")


def test_splits_refuse_a_shared_speaker_or_file(two_corpora):
    _, a, b = two_corpora
    splits = cross_corpus_splits(a, b)
    assert set(splits["role"]) == {"train", "test"} and splits["fold"].eq(0).all()
    with pytest.raises(LeakageError):
        cross_corpus_splits(a, a.assign(utt_id="x" + a["utt_id"].astype(str)))  # same speakers and files


def test_cli_cross_corpus_classical(two_corpora, run_cli):
    from ser.io import write_parquet

    root, a, b = two_corpora
    write_parquet(root / "a.parquet", a)
    write_parquet(root / "b.parquet", b)
    code, out, err = run_cli(
        "cross-corpus", root / "a.parquet", root / "b.parquet", "--model", "classical", "--profile", "four",
        "--out", root / "run", "--workers", "1", "--json",
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(out)
    assert res["train_corpora"] == ["synthetic"] and res["test_corpora"] == ["synth-b"]
    assert res["n_test"] == int(b["emotion"].isin(["angry", "happy", "neutral", "calm", "sad"]).sum())
    assert res["uar"] > 2 * res["chance_uar"]  # the synthetic prosody carries over to unseen speakers
    assert (root / "run" / "report" / "confusion_matrix.png").is_file()
    assert isinstance(pd.read_json(root / "run" / "report" / "metrics.json", typ="series"), pd.Series)


def test_corpus_normalize_standardises_each_corpus_separately():
    import numpy as np

    from ser.train.crosscorpus import corpus_normalize

    rng = np.random.default_rng(0)
    feats = {f"a{i}": {"functionals": rng.normal(5, 2, 3), "logmel": rng.normal(-40, 10, (4, 20))} for i in range(30)}
    feats |= {
        f"b{i}": {"functionals": rng.normal(-9, 0.5, 3), "logmel": rng.normal(-70, 3, (4, 25))} for i in range(20)
    }
    corpus_of = {u: u[0] for u in feats}
    out = corpus_normalize(feats, corpus_of)
    for c in "ab":
        utts = [u for u in out if u[0] == c]
        f = np.stack([out[u]["functionals"] for u in utts])
        np.testing.assert_allclose(f.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(f.std(0), 1, atol=1e-3)
        frames = np.concatenate([out[u]["logmel"] for u in utts], axis=1)
        np.testing.assert_allclose(frames.mean(1), 0, atol=1e-4)
        assert out[utts[0]]["logmel"].shape == feats[utts[0]]["logmel"].shape
