"""The batch job end to end on a small synthetic archive (in-process and a local process pool): rows per segment
and per file, a corrupt file recorded and skipped over, stereo calls per channel, resume after a partial or killed
run, fsspec URIs, and the output folder's rules."""

from __future__ import annotations

import shutil
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from ser.batch.archive import list_recordings
from ser.errors import ConfigError, SerError
from ser.jobs.batch import BatchJob
from tests.batch.conftest import ALL, CORRUPT, STEREO, assert_same_rows, frames, make_archive


def test_archive_listing(archive):
    recs = list_recordings(str(archive))
    assert [r.file for r in recs] == ALL  # not notes.txt, not the hidden folder
    assert all(r.bytes and r.bytes > 0 for r in recs)
    assert [r.file for r in list_recordings(f"file://{archive}")] == ALL
    assert [r.file for r in list_recordings(str(archive), ("flac",))] == ["sub/b.flac"]
    assert [r.file for r in list_recordings(str(archive / STEREO))] == [STEREO]
    with pytest.raises(SerError, match="archive not found"):
        list_recordings(str(archive / "nope"))
    with pytest.raises(ConfigError):
        list_recordings("nosuchprotocol://x")


def test_rows_per_segment_and_per_file_and_the_failed_file(baseline):
    res, out = baseline
    assert (res.files, res.ok, res.failed, res.skipped, res.remaining) == (5, 4, 1, 0, 0)
    assert res.failures == [(CORRUPT, res.failures[0][1])] and "undecodable audio" in res.failures[0][1]
    assert res.model_version == "3" and res.executor == "in-process" and res.audio_s == pytest.approx(11.4, abs=0.1)
    seg, files = frames(out)
    assert list(files["file"]) == ALL
    bad = files[files["file"] == CORRUPT].iloc[0]
    assert bad["status"] == "failed" and "undecodable audio" in bad["reason"] and pd.isna(bad["channel"])
    good = files[files["file"] != CORRUPT]
    assert set(good["status"]) == {"ok"} and set(good["channel"]) == {"mix"}
    assert set(files["model_version"]) == {"3"}  # the partition folder, read back as a column
    by = good.set_index("file")
    assert by.at["silence.wav", "voiced_s"] == 0 and by.at["silence.wav", "n_segments"] == 0
    assert pd.isna(by.at["silence.wav", "dominant"])
    assert by.at["a.wav", "duration_s"] == pytest.approx(4.7) and 0.6 < by.at["a.wav", "voiced_share"] < 0.9
    assert by.at[STEREO, "channels"] == 2 and by.at["a.wav", "sample_rate"] == 16_000
    shares = good[[c for c in good.columns if c.startswith("share_")]]
    assert len(shares.columns) == 8
    assert (shares.sum(axis=1)[good["voiced_s"] > 0] - 1.0).abs().max() < 1e-9
    assert len(seg) == res.segments == good["n_segments"].sum()
    assert set(seg["file"]) == {"a.wav", STEREO, "sub/b.flac"}
    assert (seg["end_s"] > seg["start_s"]).all()
    p = seg[[c for c in seg.columns if c.startswith("p_")]]
    assert (p.sum(axis=1) - 1.0).abs().max() < 1e-6 and (p.max(axis=1) == seg["confidence"]).all()


def test_resume_skips_done_files_and_gives_the_same_rows(archive, model_dir, baseline, tmp_path):
    out = tmp_path / "out"
    first = BatchJob(str(archive), out, model_dir, limit=2, part_files=1).run()
    assert (first.ok + first.failed, first.remaining, first.parts) == (2, 3, 2)
    second = BatchJob(str(archive), out, model_dir).run()
    assert (second.skipped, second.ok + second.failed, second.remaining) == (2, 3, 0)
    third = BatchJob(str(archive), out, model_dir).run()
    assert (third.skipped, third.ok, third.failed, third.parts) == (5, 0, 0, 0)
    assert_same_rows(out, baseline[1])


def test_a_killed_run_leaves_nothing_half_done(archive, model_dir, baseline, tmp_path):
    out = tmp_path / "out"
    BatchJob(str(archive), out, model_dir, limit=3, part_files=1).run()
    files_dir = out / "files" / "model_version=3"
    seg_dir = out / "segments" / "model_version=3"
    # a kill between the segments rename and the files rename: that part's files were not done
    last = sorted(files_dir.glob("part-*.parquet"))[-1]
    last.unlink()
    (seg_dir / ".part-x.parquet.abc.tmp").write_bytes(b"half-written")  # and a temp file of an unfinished write
    res = BatchJob(str(archive), out, model_dir).run()
    assert res.skipped == 2 and res.ok + res.failed == 3
    assert not list(seg_dir.glob(".*.tmp")) and {p.name for p in seg_dir.glob("*.parquet")} == {
        p.name for p in files_dir.glob("*.parquet")
    }
    assert_same_rows(out, baseline[1])


def test_retry_failed_runs_the_failed_file_again(archive, model_dir, baseline, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(baseline[1], out)
    again = BatchJob(str(archive), out, model_dir, retry_failed=True).run()
    assert (again.skipped, again.failed, again.ok) == (4, 1, 0)
    _, files = frames(out)
    assert (files["file"] == CORRUPT).sum() == 1  # replaced, not duplicated


def test_other_settings_in_the_same_folder_are_refused(archive, model_dir, baseline):
    with pytest.raises(ConfigError, match=r"other settings \(timeline\)"):
        BatchJob(str(archive), baseline[1], model_dir, timeline=_cfg(step_s=1.0)).run()


def test_split_gives_one_row_per_channel_and_fails_mono_files(archive, model_dir, tmp_path):
    res = BatchJob(
        str(archive), tmp_path / "out", model_dir, channels="split", channel_names=("agent", "customer")
    ).run()
    assert (res.ok, res.failed) == (1, 4)
    seg, files = frames(tmp_path / "out")
    stereo = files[files["file"] == STEREO].set_index("channel")
    assert list(stereo.index) == ["agent", "customer"] and set(stereo["status"]) == {"ok"}
    # the agent speaks in the first 1.5 s, the customer from 2 s on
    assert stereo.at["agent", "voiced_s"] == pytest.approx(1.5, abs=0.1)
    assert stereo.at["customer", "voiced_s"] == pytest.approx(1.5, abs=0.1)
    agent, customer = (seg[seg["channel"] == c] for c in ("agent", "customer"))
    assert agent["end_s"].max() <= 1.6 and customer["start_s"].min() >= 1.9
    mono = files[files["file"] == "a.wav"].iloc[0]
    assert mono["status"] == "failed" and "mono recording" in mono["reason"] and mono["channels"] == 1


def test_an_fsspec_uri_archive(archive, model_dir, baseline, tmp_path):
    fs = fsspec.filesystem("memory")
    for rec in list_recordings(str(archive)):
        fs.pipe(f"/calls-test/{rec.file}", Path(rec.uri).read_bytes())
    try:
        res = BatchJob("memory://calls-test", tmp_path / "out", model_dir).run()
    finally:
        fs.rm("/calls-test", recursive=True)
    assert (res.files, res.ok, res.failed) == (5, 4, 1)
    assert_same_rows(tmp_path / "out", baseline[1])


@pytest.mark.slow
def test_process_pool_gives_the_same_rows(archive, model_dir, baseline, tmp_path):
    res = BatchJob(str(archive), tmp_path / "out", model_dir, workers=2, part_files=2).run()
    assert res.executor == "process pool (2 workers)" and (res.ok, res.failed) == (4, 1)
    assert_same_rows(tmp_path / "out", baseline[1])


def test_bad_settings_are_config_errors(archive, model_dir, tmp_path):
    with pytest.raises(ConfigError, match="--channel-names needs --channels split"):
        BatchJob(str(archive), tmp_path, model_dir, channel_names=("a", "b"))
    with pytest.raises(ConfigError, match="--workers must be >= 1"):
        BatchJob(str(archive), tmp_path, model_dir, workers=0)
    with pytest.raises(ConfigError, match="mix or split"):
        BatchJob(str(archive), tmp_path, model_dir, channels="both")  # type: ignore[arg-type]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="--out is a file"):
        BatchJob(str(archive), tmp_path / "file", model_dir).run()


def test_the_archive_may_be_a_fresh_copy(model_dir, tmp_path):
    """Files added to the archive after a run are picked up by the next one; the done ones are skipped."""
    calls = make_archive(tmp_path / "calls")
    out = tmp_path / "out"
    BatchJob(str(calls), out, model_dir).run()
    shutil.copy(calls / "a.wav", calls / "sub" / "new.wav")
    res = BatchJob(str(calls), out, model_dir).run()
    assert (res.files, res.skipped, res.ok) == (6, 5, 1)


def _cfg(**kw):
    from ser.timeline import TimelineConfig

    return TimelineConfig(**kw)


def test_recordings_over_max_duration_fail_unread(archive, model_dir, tmp_path):
    res = BatchJob(str(archive), tmp_path / "out", model_dir, max_duration_s=2.0).run()
    assert (res.ok, res.failed) == (2, 3)  # a.wav (4.7 s), stereo.wav (3.5 s) and the corrupt file
    _, files = frames(tmp_path / "out")
    reasons = files.set_index("file")["reason"]
    assert "exceeds the limit of 2 s" in reasons["a.wav"] and "exceeds the limit of 2 s" in reasons[STEREO]
    assert pd.isna(reasons["silence.wav"]) and pd.isna(reasons["sub/b.flac"])
    with pytest.raises(ConfigError, match="--max-duration must be > 0"):
        BatchJob(str(archive), tmp_path / "out", model_dir, max_duration_s=0)
