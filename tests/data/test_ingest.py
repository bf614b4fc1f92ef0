"""Ingest: real corpora, every adapter's naming scheme, crafted bad files, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ser.data.ingest import ingest, summarize
from ser.data.schema import check, read_manifest
from ser.errors import SerError
from tests.conftest import tone, write_wav

RAVDESS_COUNTS = {e: 192 for e in ("calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")} | {
    "neutral": 96
}


@pytest.fixture(scope="module")
def ravdess(ravdess_dir):
    return ingest("ravdess", ravdess_dir, workers=4)


def test_ravdess_real_counts(ravdess):
    m = ravdess.manifest
    check(m)
    assert len(m) == 1440 and len(ravdess.quarantine) == 0
    assert m["speaker"].nunique() == 24
    assert m["emotion"].value_counts().to_dict() == RAVDESS_COUNTS
    assert m.groupby("speaker")["gender"].first().value_counts().to_dict() == {"male": 12, "female": 12}
    assert set(m["intensity"]) == {"normal", "strong"} and set(m["text_id"]) == {"01", "02"}
    assert (m["sample_rate"] == 16000).all() and (m["channels"] == 1).all()
    assert m.loc[m["speaker"] == "ravdess:07", "gender"].iloc[0] == "male"
    assert not ravdess.synthetic and summarize(ravdess)["total_hours"] > 1.4


def test_ravdess_profiles_fold_and_drop(ravdess_dir):
    seven = ingest("ravdess", ravdess_dir, profile="seven", workers=4)
    assert seven.manifest["emotion"].value_counts()["neutral"] == 96 + 192 and len(seven.manifest) == 1440
    four = ingest("ravdess", ravdess_dir, profile="four", workers=4)
    assert four.manifest["emotion"].value_counts().to_dict() == {"neutral": 288, "happy": 192, "sad": 192, "angry": 192}
    assert four.dropped == {"disgust": 192, "fearful": 192, "surprised": 192}


def test_emodb_real_counts(emodb_dir):
    r = ingest("emodb", emodb_dir, workers=4)
    m = r.manifest
    assert len(m) == 535 and m["speaker"].nunique() == 10
    assert m["native_label"].value_counts().to_dict() == {
        "W": 127, "L": 81, "E": 46, "A": 69, "F": 71, "N": 79, "T": 62,
    }  # fmt: skip
    assert m["emotion"].value_counts()["angry"] == 127 and m["emotion"].value_counts()["boredom"] == 81
    assert m.groupby("speaker")["gender"].first().value_counts().to_dict() == {"male": 5, "female": 5}


def test_official_48k_wav_layout(tmp_path):
    root = tmp_path / "Audio_Speech_Actors_01-24"
    for actor in (1, 2):
        for emo in ("01", "05"):
            y = np.stack([tone(0.5, 48_000), tone(0.5, 48_000, 330)], axis=1)
            write_wav(root / f"Actor_{actor:02d}" / f"03-01-{emo}-01-01-01-{actor:02d}.wav", y, 48_000)
    m = ingest("ravdess", tmp_path).manifest
    assert len(m) == 4 and set(m["sample_rate"]) == {48000} and set(m["channels"]) == {2}
    assert set(m["emotion"]) == {"neutral", "angry"} and set(m["speaker"]) == {"ravdess:01", "ravdess:02"}


def test_bad_files_quarantined_rest_ingested(tmp_path):
    actor = tmp_path / "Actor_01"
    for i, emo in enumerate(("01", "03", "04")):
        write_wav(actor / f"03-01-{emo}-01-01-01-01.wav", tone(0.6, freq=200 + 50 * i))
    (actor / "03-01-05-01-01-01-01.wav").write_bytes(b"")  # zero bytes
    good = (actor / "03-01-03-01-01-01-01.wav").read_bytes()
    (actor / "03-01-06-01-01-01-01.wav").write_bytes(good[:30])  # truncated header
    (actor / "03-01-07-01-01-01-01.wav").write_text("this is text, not audio\n" * 50)  # text renamed .wav
    nan = tone(0.6)
    nan[100:200] = np.nan
    write_wav(actor / "03-01-08-01-01-01-01.wav", nan, subtype="FLOAT")  # NaN samples: decodes, validate rejects
    write_wav(actor / "03-01-02-01-01-01-01.wav", np.zeros(9600, np.float32))  # pure silence: validate rejects
    write_wav(actor / "recording_final.wav", tone(0.5))  # unknown name pattern
    write_wav(actor / "01-01-05-01-01-01-01.wav", tone(0.5))  # video modality: not audio-only speech
    r = ingest("ravdess", tmp_path)
    reasons = dict(zip(r.quarantine["path"].map(lambda p: p.split("/")[-1]), r.quarantine["reason"], strict=True))
    assert set(reasons) == {
        "03-01-05-01-01-01-01.wav", "03-01-06-01-01-01-01.wav", "03-01-07-01-01-01-01.wav",
        "recording_final.wav", "01-01-05-01-01-01-01.wav",
    }  # fmt: skip
    assert "undecodable" in reasons["03-01-07-01-01-01-01.wav"]
    assert "pattern" in reasons["recording_final.wav"] and "not audio-only" in reasons["01-01-05-01-01-01-01.wav"]
    assert len(r.manifest) == 5  # three good files + the NaN and the silent one (for validate)


def test_cremad_joins_real_demographics(tmp_path, cremad_dir):
    audio = tmp_path / "AudioWAV"
    for name in ("1001_DFA_ANG_XX", "1002_IEO_HAP_HI", "1091_TIE_SAD_LO"):
        write_wav(audio / f"{name}.wav", tone(0.5))
    m = ingest("cremad", tmp_path, demographics=cremad_dir / "VideoDemographics.csv").manifest
    row = m.set_index("speaker").loc["cremad:1001"]
    assert row["age"] == 51 and row["gender"] == "male" and row["race"] == "Caucasian"
    assert m.set_index("speaker").loc["cremad:1002", "gender"] == "female"
    assert set(m["intensity"]) == {"unspecified", "high", "low"} and set(m["emotion"]) == {"angry", "happy", "sad"}


def test_tess_quirks(tmp_path):
    write_wav(tmp_path / "OAF_angry" / "OAF_back_angry.wav", tone(0.4))
    write_wav(tmp_path / "yaf_Pleasant_surprised" / "YAF_dog_ps.wav", tone(0.4))
    write_wav(tmp_path / "OAF_neutral" / "OA_bite_neutral.wav", tone(0.4))
    (tmp_path / "YAF_sad").mkdir()
    sf.write(tmp_path / "YAF_sad" / "YAF_bar_sad.wav", tone(0.4), 16000, subtype="FLOAT")  # not plain PCM
    m = ingest("tess", tmp_path).manifest.set_index("text_id")
    assert m.loc["dog", "emotion"] == "surprised" and m.loc["bite", "speaker"] == "tess:OAF"
    assert m.loc["bar", "emotion"] == "sad" and set(m["gender"]) == {"female"}


def test_savee_both_layouts(tmp_path):
    write_wav(tmp_path / "flat" / "DC_a01.wav", tone(0.4))
    write_wav(tmp_path / "flat" / "JE_sa03.wav", tone(0.4))
    write_wav(tmp_path / "orig" / "AudioData" / "KL" / "su12.wav", tone(0.4))
    flat = ingest("savee", tmp_path / "flat").manifest
    orig = ingest("savee", tmp_path / "orig").manifest
    assert sorted(flat["emotion"]) == ["angry", "sad"] and set(flat["speaker"]) == {"savee:DC", "savee:JE"}
    assert orig["speaker"].tolist() == ["savee:KL"] and orig["emotion"].tolist() == ["surprised"]


def test_folder_and_csv_with_unmapped_labels_counted(tmp_path):
    for label in ("Anger", "joy", "contempt"):
        write_wav(tmp_path / "f" / label / "x.wav", tone(0.4))
    r = ingest("folder", tmp_path / "f")
    assert sorted(r.manifest["emotion"]) == ["angry", "happy"] and r.dropped == {"unmapped:contempt": 1}
    write_wav(tmp_path / "c" / "a.wav", tone(0.4))
    write_wav(tmp_path / "c" / "b.flac", tone(0.4))
    table = {"path": ["a.wav", "b.flac"], "label": ["sad", "neutral"], "speaker": ["s1", "s2"]}
    table |= {"gender": ["female", "male"], "split": ["train", "test"]}
    pd.DataFrame(table).to_csv(tmp_path / "c" / "m.csv", index=False)
    m = ingest("csv", tmp_path / "c" / "m.csv").manifest.set_index("speaker")
    assert m.loc["csv:s1", "emotion"] == "sad" and m.loc["csv:s2", "split"] == "test"


def test_unknown_corpus_and_missing_path():
    with pytest.raises(SerError, match="unknown corpus"):
        ingest("nope", ".")
    with pytest.raises(SerError, match="not found"):
        ingest("ravdess", "/does/not/exist")


def test_cli_ingest_json_and_errors(run_cli, tmp_path, emodb_dir):
    code, out, _ = run_cli("data", "ingest", "--corpus", "emodb", emodb_dir, "--out", tmp_path, "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["files"] == 535 and summary["speakers"] == 10 and summary["labels"]["angry"] == 127
    assert len(read_manifest(tmp_path / "manifest.parquet")) == 535
    code, _, err = run_cli("data", "ingest", "--corpus", "emodb", tmp_path / "missing", "--out", tmp_path)
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("data", "ingest", "--corpus", "klingon", tmp_path, "--out", tmp_path)
    assert code == 2 and "unknown corpus" in err
    code, out, _ = run_cli("data", "ingest", "--help")
    assert code == 0 and "Example" in out
