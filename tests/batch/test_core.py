"""The pure core: timelines → segment rows and summary rows, with their Arrow schemas (a fake model, no files)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ser.batch.core import (
    FAILED,
    OK,
    FileInfo,
    failed_row,
    file_result,
    file_schema,
    label_column,
    segment_schema,
    to_table,
)
from ser.errors import ConfigError
from ser.timeline import AudioError, ChannelError, TimelineConfig, analyze, channel_names, parse_channel_names
from tests.batch.conftest import SR, silence, voice

LABELS = ["neutral", "angry", "so-so"]


def fake_proba(clip: np.ndarray) -> np.ndarray:
    """'angry' for loud clips, 'neutral' for quiet ones."""
    loud = float(np.sqrt(np.mean(clip**2))) > 0.1
    return np.array([0.1, 0.8, 0.1]) if loud else np.array([0.7, 0.2, 0.1])


@pytest.fixture(scope="module")
def timeline():
    y = np.concatenate([silence(0.5), voice(2.0, amp=0.6), silence(1.0), voice(1.0, amp=0.1), silence(0.5)])
    return analyze(y, SR, fake_proba, LABELS, TimelineConfig(smoothing="none"))  # unsmoothed: peaks are exact


def test_segment_rows_one_per_segment_with_probabilities(timeline):
    res = file_result(FileInfo("calls/a.wav", 1234, 1, SR), [("mix", timeline)], processing_s=0.5)
    assert len(res.segments) == len(timeline.segments) >= 2
    first = res.segments[0]
    assert first["file"] == "calls/a.wav" and first["channel"] == "mix" and first["segment"] == 0
    assert first["start_s"] == pytest.approx(0.5, abs=0.05) and first["label"] == "angry"
    assert first["confidence"] == pytest.approx(0.8)
    assert [first[label_column("p_", lab)] for lab in LABELS] == pytest.approx([0.1, 0.8, 0.1])
    assert res.segments[-1]["label"] == "neutral"
    assert res.audio_s == pytest.approx(5.0) and res.ok and res.reason is None


def test_summary_row_voiced_share_shares_and_anger_peaks(timeline):
    res = file_result(FileInfo("a.wav", 10, 1, SR), [("mix", timeline)], processing_s=0.5)
    (row,) = res.summaries
    assert row["status"] == OK and row["reason"] is None and row["n_segments"] == len(timeline.segments)
    assert row["duration_s"] == pytest.approx(5.0)
    assert row["voiced_share"] == pytest.approx(row["voiced_s"] / 5.0) and 0.5 < row["voiced_share"] < 0.7
    assert row["share_angry"] == pytest.approx(2.0 / 3.0, abs=0.05)
    assert row["share_neutral"] + row["share_angry"] + row["share_so_so"] == pytest.approx(1.0)
    assert row["dominant"] == "angry"
    # p(angry) passes 0.5 during the loud stretch only: one peak, over it
    assert row["peak_label"] == "angry" and row["peaks"] == 1 == len(row["peak_spans"])
    span = row["peak_spans"][0]
    assert 0.5 <= span["start_s"] < span["end_s"] <= 3.0 and row["peak_max"] == span["max_p"] > 0.5
    assert row["peak_s"] == pytest.approx(span["end_s"] - span["start_s"])


def test_failed_row_and_tables_keep_the_schema(timeline):
    ok = file_result(FileInfo("a.wav", 10, 2, SR), [("agent", timeline), ("customer", timeline)], 0.1)
    bad = failed_row(FileInfo("b.wav", 3), "undecodable audio: junk")
    assert bad["status"] == FAILED and bad["channel"] is None
    files = to_table([*ok.summaries, bad], file_schema(LABELS))
    segs = to_table(ok.segments, segment_schema(LABELS))
    assert files.schema == file_schema(LABELS) and segs.schema == segment_schema(LABELS)
    assert files["channel"].to_pylist() == ["agent", "customer", None]
    assert files["voiced_s"].to_pylist()[2] is None and files["reason"].to_pylist()[2] == "undecodable audio: junk"
    assert set(segs["channel"].to_pylist()) == {"agent", "customer"}
    assert to_table([], segment_schema(LABELS)).num_rows == 0
    assert "p_so_so" in segment_schema(LABELS).names and segment_schema(LABELS).field("p_so_so").type == pa.float64()


def test_channel_names():
    assert channel_names(2) == ["ch0", "ch1"]
    assert channel_names(2, ("agent", "customer")) == ["agent", "customer"]
    with pytest.raises(ChannelError, match="mono recording"):
        channel_names(1, ("agent", "customer"))
    with pytest.raises(ChannelError, match="3 channels but 2 channel names"):
        channel_names(3, ("agent", "customer"))
    assert issubclass(ChannelError, AudioError)
    assert parse_channel_names(" agent , customer ") == ("agent", "customer")
    assert parse_channel_names(None) == () == parse_channel_names("")
    for bad in ("a,a", "a,,b", "x" * 65):
        with pytest.raises(ConfigError):
            parse_channel_names(bad)
