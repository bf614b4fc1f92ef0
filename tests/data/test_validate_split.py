"""Validation (checks, duplicates, thresholds, report), splits + leakage guard, and the synthetic corpus."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ser.audio import load_audio
from ser.data.ingest import ingest
from ser.data.split import carve_validation, check_leakage, fold_frames, make_splits
from ser.data.synth import synthesize
from ser.data.validate import ValidationConfig, measure, validate
from ser.errors import LeakageError, SerError
from tests.conftest import tone, write_wav


def test_measure_pure_signals():
    assert measure(np.zeros(1000, np.float32))["peak_dbfs"] < -200
    clipped = np.clip(3 * tone(0.5), -1, 1)
    assert measure(clipped)["clip_ratio"] > 0.05
    assert abs(measure(tone(0.5) + 0.3)["dc_offset"] - 0.3) < 0.01
    y = tone(0.5)
    y[:7] = np.nan
    assert measure(y)["nonfinite"] == 7


@pytest.fixture
def bad_corpus(tmp_path):
    a = tmp_path / "Actor_01"
    write_wav(a / "03-01-01-01-01-01-01.wav", tone(1.0, freq=200))
    write_wav(a / "03-01-03-01-01-01-01.wav", tone(1.0, freq=250))
    write_wav(a / "03-01-04-01-01-01-01.wav", tone(1.0, freq=300))
    nan = tone(1.0)
    nan[500:600] = np.nan
    write_wav(a / "03-01-05-01-01-01-01.wav", nan, subtype="FLOAT")
    write_wav(a / "03-01-06-01-01-01-01.wav", np.zeros(16000, np.float32))
    write_wav(a / "03-01-07-01-01-01-01.wav", np.clip(4 * tone(1.0), -1, 1))
    write_wav(a / "03-01-08-01-01-01-01.wav", tone(0.1))
    b = tmp_path / "Actor_02"
    write_wav(b / "03-01-02-01-01-01-02.wav", tone(1.0, freq=410))
    (b / "03-01-05-01-01-01-02.wav").write_bytes((b / "03-01-02-01-01-01-02.wav").read_bytes())  # label conflict
    return tmp_path


def test_bad_signals_and_label_conflicts_quarantined(bad_corpus, tmp_path):
    r = validate(ingest("ravdess", bad_corpus).manifest)
    reasons = {p.split("/")[-1]: why for p, why in zip(r.quarantine["path"], r.quarantine["reason"], strict=True)}
    assert "non-finite" in reasons["03-01-05-01-01-01-01.wav"]
    assert "near-silence" in reasons["03-01-06-01-01-01-01.wav"]
    assert "clipping" in reasons["03-01-07-01-01-01-01.wav"]
    assert "duration" in reasons["03-01-08-01-01-01-01.wav"]
    assert "conflicting labels" in reasons["03-01-02-01-01-01-02.wav"]
    assert "conflicting labels" in reasons["03-01-05-01-01-01-02.wav"]
    assert sorted(r.manifest["emotion"]) == ["happy", "neutral", "sad"]
    assert any(d["label_conflict"] for d in r.report["duplicates"])


def test_thresholds_and_cli(bad_corpus, tmp_path, run_cli):
    code, _, _ = run_cli("data", "ingest", "--corpus", "ravdess", bad_corpus, "--out", tmp_path / "m")
    assert code == 0
    code, _, err = run_cli("data", "validate", tmp_path / "m" / "manifest.parquet", "--out", tmp_path / "v")
    assert code == 1 and "quarantined fraction" in err  # 6 of 9 files quarantined
    for name in ("manifest.parquet", "quarantine.parquet", "report.json", "report.md", "classes.png"):
        assert (tmp_path / "v" / name).stat().st_size > 0
    code, out, _ = run_cli(
        "data", "validate", tmp_path / "m" / "manifest.parquet", "--out", tmp_path / "v2", "--json",
        "--max-quarantined", "1.0", "--max-imbalance", "100",
    )  # fmt: skip
    report = json.loads(out)
    assert report["quarantined"] == 6 and not any("quarantined fraction" in f for f in report["failures"])
    assert code == (1 if report["failures"] else 0)
    code, _, err = run_cli("data", "validate", tmp_path / "nope.parquet", "--out", tmp_path / "v3")
    assert code == 2 and "not found" in err


def test_ravdess_duplicate_pair_reported(ravdess_dir):
    r = validate(ingest("ravdess", ravdess_dir, workers=4).manifest, ValidationConfig(), workers=4)
    pair = [d for d in r.report["duplicates"] if d["kind"] == "byte-identical"]
    assert len(pair) == 1
    names = sorted(p.split("/")[-1] for p in pair[0]["files"])
    assert names == ["03-01-03-01-02-01-07.flac", "03-01-03-01-02-02-07.flac"] and pair[0]["labels"] == ["happy"]
    assert len(r.manifest) == 1439 and r.failures == []


def test_ravdess6_preset_passes_guard_and_leak_fails(ravdess_dir):
    m = ingest("ravdess", ravdess_dir, workers=4).manifest
    s = make_splits(m, "ravdess6")
    tests = s[s["role"] == "test"]
    assert s["fold"].nunique() == 6 and tests["utt_id"].is_unique and len(tests) == 1440
    for k in range(6):
        spk = sorted(tests.loc[tests["fold"] == k, "speaker"].unique())
        assert spk == [f"ravdess:{a:02d}" for a in range(4 * k + 1, 4 * k + 5)]
        assert (tests["fold"] == k).sum() == 240
    check_leakage(s)
    leaky = s.copy()
    leaky.loc[leaky.index[(leaky["fold"] == 0) & (leaky["speaker"] == "ravdess:01")][0], "role"] = "train"
    with pytest.raises(LeakageError, match="speaker ravdess:01"):
        check_leakage(leaky)
    dup = s.copy()
    row = dup[(dup["fold"] == 0) & (dup["role"] == "train")].index[0]
    dup.loc[row, "sha256"] = dup[(dup["fold"] == 0) & (dup["role"] == "test")]["sha256"].iloc[0]
    with pytest.raises(LeakageError, match="sha256"):
        check_leakage(dup)


def _toy(n_spk=8, per=8):
    rows = [
        {"utt_id": f"s{s}_{i}", "speaker": f"c:{s}", "gender": "male" if s % 2 else "female",
         "emotion": ("angry", "sad")[i % 2], "sha256": f"{s:02d}{i:02d}"}
        for s in range(n_spk) for i in range(per)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_kfold_loso_holdout_val_are_speaker_disjoint():
    m = _toy()
    for method, kw in (("kfold", {"k": 4}), ("loso", {}), ("holdout", {"test_fraction": 0.25})):
        s = make_splits(m, method, val_speakers=1, seed=3, **kw)
        check_leakage(s)
        assert set(s["role"]) == {"train", "val", "test"}
        assert s.equals(make_splits(m, method, val_speakers=1, seed=3, **kw))  # deterministic
    assert make_splits(m, "loso")["fold"].nunique() == 8
    fr = fold_frames(m, make_splits(m, "kfold", k=4), 0)
    rest, val = carve_validation(fr["train"], 2, 0)
    assert set(rest["speaker"]).isdisjoint(val["speaker"]) and val["gender"].nunique() == 2
    with pytest.raises(SerError, match="at least 2 speakers"):
        make_splits(m[m["speaker"] == "c:0"], "kfold")
    with pytest.raises(SerError, match="needs"):
        make_splits(m, "kfold", k=20)
    aug = make_splits(m, "kfold", k=4).assign(augmented=False)
    aug.loc[aug.index[aug["role"] == "test"][0], "augmented"] = True
    with pytest.raises(LeakageError, match="augmented"):
        check_leakage(aug)


def test_identical_files_of_two_speakers_stay_together():
    m = _toy(4, 4)
    m.loc[m["utt_id"] == "s1_0", "sha256"] = "same"
    m.loc[m["utt_id"] == "s2_0", "sha256"] = "same"
    for k in range(2):
        fr = fold_frames(m, make_splits(m, "kfold", k=2, seed=k), 0)
        assert ("c:1" in set(fr["test"]["speaker"])) == ("c:2" in set(fr["test"]["speaker"]))


def test_synth_deterministic_marked_and_learnable(tmp_path, run_cli):
    a = synthesize(tmp_path / "a", n_speakers=4, per_emotion=2, seed=1)
    b = synthesize(tmp_path / "b", n_speakers=4, per_emotion=2, seed=1)
    files = sorted(p.relative_to(a) for p in a.glob("Actor_*/*.wav"))
    assert len(files) == 64 and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert json.loads((a / "SYNTHETIC_CORPUS.json").read_text())["corpus"] == "synthetic"
    r = ingest("ravdess", a)
    assert r.synthetic and set(r.manifest["corpus"]) == {"synthetic"} and r.manifest["speaker"].nunique() == 4
    rms = r.manifest.assign(rms=[float(np.sqrt(np.mean(load_audio(p) ** 2))) for p in r.manifest["path"]])
    level = rms.groupby("emotion")["rms"].mean()
    assert level["angry"] > 2 * level["sad"]
    code, out, _ = run_cli("data", "synth", "--out", tmp_path / "c", "--speakers", "2", "--per-emotion", "1", "--json")
    assert code == 0 and json.loads(out)["files"] == 16


def test_an_empty_manifest_or_one_where_every_file_fails_is_a_clear_outcome(tmp_path):
    """Ingest that found nothing is a one-line ManifestError (it was a KeyError 'pcm_hash'); a manifest whose every
    file is unreadable quarantines them all and keeps the manifest's columns."""
    from ser.errors import ManifestError

    empty = ingest("ravdess", tmp_path).manifest
    with pytest.raises(ManifestError, match="no audio files"):
        validate(empty)
    clip = write_wav(tmp_path / "Actor_01" / "03-01-01-01-01-01-01.wav", tone(1.0))
    manifest = ingest("ravdess", tmp_path).manifest
    clip.write_bytes(clip.read_bytes()[:60])  # broken between ingest and validation
    r = validate(manifest)
    assert r.manifest.empty and "pcm_hash" in r.manifest.columns
    assert len(r.quarantine) == 1
