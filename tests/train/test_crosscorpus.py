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


@pytest.fixture(scope="module")
def quiet_b(two_corpora):
    """Corpus b re-recorded 20 dB quieter (another channel): a domain shift for the adaptation to see."""
    import soundfile as sf

    root, _, b = two_corpora
    paths = []
    for p in b["path"]:
        y, sr = sf.read(p, dtype="float32")
        q = root / "b_quiet" / f"{len(paths)}.wav"
        q.parent.mkdir(parents=True, exist_ok=True)
        sf.write(q, 0.1 * y, sr, subtype="FLOAT")
        paths.append(str(q))
    return b.assign(path=paths, sha256="")


def _tiny(name="cnn-small"):
    from ser.train.recipes import get_recipe

    return get_recipe(name, {"train": {"epochs": 1, "crop_frames": 100}})


def test_neural_cross_corpus_rows_with_and_without_adaptation(two_corpora, quiet_b, one_torch_thread):
    import numpy as np

    from ser.train.crosscorpus import neural_cross_corpus

    root, a, _ = two_corpora
    rows = neural_cross_corpus(a, quiet_b, _tiny(), out_dir=root / "neural", workers=1, n_boot=200)
    assert [r["adaptation"] for r in rows] == ["none", "target", "batchnorm"]
    none, target, bn = rows
    n4 = int(quiet_b["emotion"].isin(["angry", "happy", "neutral", "calm", "sad"]).sum())
    for r in rows:
        assert r["n_test"] == n4 and r["test_speakers"] == 4 and r["train_corpora"] == ["synthetic"]
        for metric in ("uar", "accuracy"):
            ci = r["ci"][metric]
            assert ci["low"] <= r[metric] <= ci["high"]
        assert (root / "neural" / r["adaptation"] / "report" / "report.md").is_file()
    assert none["members"]["cnn-small"]["epochs_run"] == 1
    stats = target["adaptation_stats"]
    assert stats["source_clips"] == none["n_train"] and stats["target_clips"] == n4
    assert stats["mean_row_shift_db"] > 10  # the 20 dB quieter corpus is seen as shifted
    gain = target["gain_vs_none"]["uar"]
    assert gain["low"] <= gain["diff"] <= gain["high"]
    assert np.isclose(gain["diff"], target["uar"] - none["uar"])
    # AdaBN: the cnn-small graph's batch norms (its input norm and 3 conv layers) re-estimated on the test inputs
    assert bn["adaptation_stats"]["batchnorm_layers"] == {"cnn-small": 4}
    assert bn["adaptation_stats"]["target_clips"] == n4
    g = bn["gain_vs_none"]["uar"]
    assert np.isclose(g["diff"], bn["uar"] - none["uar"]) and (root / "neural" / "cnn-small" / "adabn.onnx").is_file()
    with pytest.raises(SerError, match="modes"):
        neural_cross_corpus(a, quiet_b, _tiny(), out_dir=root / "x", modes=("bogus",))
    with pytest.raises(SerError, match="classical"):
        neural_cross_corpus(a, quiet_b, _tiny("classical"), out_dir=root / "x")


def test_joint_corpus_scores_each_corpus_on_its_held_out_speakers(two_corpora, one_torch_thread):
    from ser.executor import Executor
    from ser.train.crosscorpus import joint_corpus, joint_splits

    root, a, b = two_corpora
    splits = joint_splits({"a": a, "b": b}, k=2)
    corpus = dict(zip(pd.concat([a, b])["utt_id"], ["a"] * len(a) + ["b"] * len(b), strict=True))
    for k in (0, 1):  # every fold holds out speakers of both corpora
        test = splits[(splits["fold"] == k) & (splits["role"] == "test")]
        assert {corpus[u] for u in test["utt_id"]} == {"a", "b"}
    rows = joint_corpus({"a": a, "b": b}, _tiny(), k=2, out_dir=root / "joint", workers=1, n_boot=200)
    assert [r["test_corpus"] for r in rows] == ["a", "b"]
    four = ["angry", "happy", "neutral", "calm", "sad"]
    assert rows[0]["n_test"] == int(a["emotion"].isin(four).sum()) and rows[0]["test_speakers"] == 6
    assert rows[1]["n_test"] == int(b["emotion"].isin(four).sum()) and rows[1]["test_speakers"] == 4
    assert all(r["ci"]["uar"]["low"] <= r["uar"] <= r["ci"]["uar"]["high"] for r in rows)
    cut = joint_corpus({"a": a, "b": b}, _tiny(), k=2, folds=[0], out_dir=root / "joint", workers=1, n_boot=200)
    assert cut[0]["folds"] == [0] and cut[0]["n_test"] < rows[0]["n_test"]  # a cut run scores only its folds

    class Counting(Executor):  # the local executor, counting the fold tasks handed to it
        def map_tasks(self, fn, items, **kw):
            handed.extend(items)
            return super().map_tasks(fn, items, **kw)

    handed: list = []
    again = joint_corpus({"a": a, "b": b}, _tiny(), k=2, out_dir=root / "joint-x", workers=1, n_boot=200,
                         executor=Counting())  # fmt: skip
    assert sorted(t.fold for t in handed) == [0, 1]  # every fold went through the executor it was given
    assert [r["uar"] for r in again] == [r["uar"] for r in rows]  # same seeds, same folds: the same scores


def test_a_robust_recipe_gets_its_variants_of_training_rows_only(two_corpora, quiet_b, one_torch_thread):
    import numpy as np

    from ser.errors import ConfigError
    from ser.train.crosscorpus import neural_cross_corpus
    from ser.train.recipes import get_recipe

    root, a, _ = two_corpora
    spec = get_recipe("cnn-small", {"train": {"epochs": 1, "crop_frames": 100}, "robust": {"copies": 1}})
    with pytest.raises(ConfigError, match="no variant source"):  # never trained plain under the robust name
        neural_cross_corpus(a, quiet_b, spec, out_dir=root / "r0", workers=1, n_boot=50, modes=("none",))
    asked: list[str] = []

    def source(rows):
        asked.extend(rows["utt_id"])
        return {u: [{"logmel": np.full((64, 60), -40.0, np.float32)}] for u in rows["utt_id"]}

    rows = neural_cross_corpus(
        a, quiet_b, spec, out_dir=root / "r1", workers=1, n_boot=50, modes=("none",), variants_for=lambda m: source
    )
    member = rows[0]["members"]["cnn-small"]
    assert member["n_train_variants"] == member["n_train"] == len(asked)
    assert not set(asked) & set(quiet_b["utt_id"])  # the test corpus never gets a variant


def test_a_distilled_recipe_crosses_corpora_with_a_teacher_of_the_training_corpus_only(
    two_corpora, quiet_b, one_torch_thread, monkeypatch
):
    """The default recipe is distilled: its cross-corpus run trains the teacher first, on the training corpus's
    clips (never the test corpus's), and the student towards its targets."""
    import json

    from ser.train.crosscorpus import neural_cross_corpus
    from ser.train.recipes import RECIPES, DistilConfig, EnsembleSpec, get_recipe

    root, a, _ = two_corpora
    tiny = _tiny()
    for s in (0, 1):  # a two-member teacher of tiny cnns
        monkeypatch.setitem(RECIPES, f"tiny-t{s}", tiny.model_copy(update={"name": f"tiny-t{s}", "seed": s}))
    monkeypatch.setitem(RECIPES, "tiny-pair", EnsembleSpec(name="tiny-pair", members=["tiny-t0", "tiny-t1"]))
    student = tiny.model_copy(update={"name": "student", "distil": DistilConfig(teacher="tiny-pair")})
    out = root / "neural-distil"
    (row,) = neural_cross_corpus(a, quiet_b, student, out_dir=out, workers=1, n_boot=50, modes=("none",))
    assert row["members"]["student"]["distilled_from"] == "tiny-pair"
    record = json.loads((out / "student_teacher" / "teacher.json").read_text())
    trained_on = set(record["info"]["train_speakers"]) | set(record["info"]["val_speakers"])
    assert trained_on and trained_on <= set(a["speaker"].astype(str))  # the training corpus's speakers only
    assert not trained_on & set(quiet_b["speaker"].astype(str))
    # read back, not trained again: the same row from the kept teacher and checkpoints
    (again,) = neural_cross_corpus(a, quiet_b, student, out_dir=out, workers=1, n_boot=50, modes=("none",))
    assert again["uar"] == row["uar"]
    assert get_recipe("cnn-distil-robust").distil is not None  # the default this serves
