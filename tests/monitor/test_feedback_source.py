"""Feedback as data: the log's labels joined by PCM hash to clips the user supplies, and the ingest job over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ser.errors import SerError
from tests.monitor.conftest import feedback_for_clips


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from ser.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("clips") / "audio", n_speakers=2, per_emotion=1, seed=3)


def test_labelled_clips_join_feedback_to_audio_by_pcm_hash(clips, tmp_path):
    import shutil

    import soundfile as sf

    from ser.data.synth import EMOTION_CODES
    from ser.monitor.feedback import labelled_clips

    clips = Path(shutil.copytree(clips, tmp_path / "audio"))
    ids = feedback_for_clips(clips, tmp_path / "log", skip=2, wrong_first=True)
    wavs = sorted(clips.rglob("*.wav"))
    # the same audio re-encoded as FLAC elsewhere in the folder is the same utterance (one row), and a stray
    # undecodable file is reported, not fatal
    y, sr = sf.read(wavs[5])
    sf.write(clips / "Actor_01" / "copy.flac", y, sr)
    (clips / "broken.wav").write_bytes(b"not audio")
    res = labelled_clips(tmp_path / "log", clips)
    assert len(res.rows) == len(wavs) - 2
    assert res.no_audio == 0 and res.unlabelled == 2 and res.duplicates == 1  # the FLAC copy
    assert [p for p, _ in res.undecodable] == [str(clips / "broken.wav")]
    by_path = {r["path"]: r for r in res.rows}
    by_code = {v: k for k, v in EMOTION_CODES.items()}
    for wav in wavs[2:]:
        row = by_path[str(wav.resolve())]
        assert row["label"] == by_code[wav.name.split("-")[2]]  # the latest feedback (the right label) won
        assert row["speaker"] == wav.parent.name
    assert {r["prediction_id"] for r in res.rows} == set(ids[2:])


def test_feedback_ingest_job_builds_a_manifest(clips, tmp_path):
    from ser.jobs.data import FeedbackIngestJob

    feedback_for_clips(clips, tmp_path / "log")
    res = FeedbackIngestJob(tmp_path / "log", clips, tmp_path / "out").run()
    m = res.result.manifest
    assert len(m) == len(list(clips.rglob("*.wav"))) and set(m["corpus"]) == {"feedback"}
    assert m["speaker"].nunique() == 2 and m["sha256"].str.len().eq(64).all()
    assert res.summary["labelled_clips"] == len(m) and res.manifest.is_file()


def test_feedback_source_without_matching_audio_is_a_clear_error(clips, tmp_path):
    from ser.data.synth import synthesize
    from ser.jobs.data import FeedbackIngestJob

    feedback_for_clips(clips, tmp_path / "log")
    other = synthesize(tmp_path / "other", n_speakers=2, per_emotion=1, seed=9)
    with pytest.raises(SerError, match="no feedback label"):
        FeedbackIngestJob(tmp_path / "log", other, tmp_path / "out").run()
