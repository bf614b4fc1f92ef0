"""The prediction log: records, the background writer (never blocks, flushes, hour partitions, crash safety),
readers, retention, deletion, and what the log never holds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ser.monitor import store
from ser.monitor.ids import new_id
from ser.monitor.log import (
    PREDICTION_SCHEMA,
    PredictionLog,
    append_records,
    build_record,
    delete_ids,
    issued,
    name_hash,
    purge,
    read_log,
    table_root,
)
from tests.monitor.conftest import LABELS, fake_record

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 30, 10, 15, tzinfo=UTC)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in (root / "predictions").rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------------------------
# records


def test_build_record_fills_label_confidence_and_time():
    rng = np.random.default_rng(0)
    r = fake_record(rng, probabilities={lab: (0.65 if lab == "sad" else 0.05) for lab in LABELS})
    assert r.label == "sad" and r.confidence == pytest.approx(0.65)
    assert r.labels == tuple(LABELS) and len(r.probabilities) == len(LABELS)
    assert r.ts == store.utc(r.ts) and abs((r.ts - datetime.now(UTC)).total_seconds()) < 5
    row = r.to_row()
    assert set(row) == set(PREDICTION_SCHEMA.names)
    no_answer = fake_record(rng, label=None)
    assert no_answer.label is None and no_answer.confidence is not None


def test_build_record_refuses_bad_input():
    kw = dict(route="/v1/predict", model_name="m", model_version="1", duration_s=1.0, processing_ms=1.0)
    with pytest.raises(ValueError, match="labels are required"):
        build_record(probabilities=[0.5, 0.5], **kw)
    with pytest.raises(ValueError, match="2 probabilities for 3 labels"):
        build_record(probabilities=[0.5, 0.5], labels=["a", "b", "c"], **kw)
    with pytest.raises(ValueError, match="not one of"):
        build_record(probabilities={"a": 1.0}, label="b", **kw)
    with pytest.raises(ValueError, match="role"):
        build_record(probabilities={"a": 1.0}, role="blue", **kw)
    with pytest.raises(ValueError):
        build_record(probabilities={"a": 1.0}, prediction_id="not-an-id", **kw)


def test_client_names_are_stored_only_as_a_salted_hash():
    rng = np.random.default_rng(0)
    with_salt = fake_record(rng, client_name="call-0042-jane-doe.wav", salt="s3cret")
    assert with_salt.client_name_hash == name_hash("call-0042-jane-doe.wav", "s3cret")
    assert with_salt.client_name_hash != name_hash("call-0042-jane-doe.wav", "other")
    assert fake_record(rng, client_name="call-0042-jane-doe.wav").client_name_hash is None  # no salt: nothing


def test_the_log_holds_no_audio_and_no_file_names(tmp_path):
    name = "call-0042-jane-doe.wav"
    rng = np.random.default_rng(0)
    with PredictionLog(tmp_path, flush_s=0.05) as log:
        for _ in range(20):
            log.log(fake_record(rng, client_name=name, salt="s3cret"))
    table = read_log(tmp_path)
    assert table.num_rows == 20
    for f in PREDICTION_SCHEMA:
        assert not any(w in f.name for w in ("audio", "sample", "wave", "pcm_data", "file_name", "filename", "path"))
        if pa.types.is_list(f.type):  # only the n_mels band statistics and the n_classes probabilities
            lengths = set(table[f.name].combine_chunks().value_lengths().to_pylist())
            assert lengths <= {8, len(LABELS)}, (f.name, lengths)
    assert name not in str(table.to_pylist())
    for path in files_under(tmp_path):
        assert name.encode() not in path.read_bytes() and b"jane" not in path.read_bytes()


# ----------------------------------------------------------------------------------------------------------------
# the writer


def test_log_never_blocks_when_the_queue_is_full(tmp_path):
    rng = np.random.default_rng(0)
    log = PredictionLog(tmp_path, flush_s=3600, max_queue=5)  # the thread will not write during the test
    records = [fake_record(rng) for _ in range(12)]
    t0 = time.perf_counter()
    accepted = [log.log(r) for r in records]
    elapsed = time.perf_counter() - t0
    assert accepted == [True] * 5 + [False] * 7
    assert log.dropped == 7 and log.pending == 5
    assert elapsed < 0.5  # no waiting on a full queue
    assert all(r.prediction_id in log.recent for r in records)  # ids are known for feedback even when dropped
    assert log.flush() == 5 and log.pending == 0
    assert read_log(tmp_path).num_rows == 5
    log.close()
    assert log.log(records[0]) is False  # closed: dropped, not raised
    assert log.counters()["dropped"] == 8


def test_the_thread_flushes_every_interval(tmp_path):
    rng = np.random.default_rng(0)
    log = PredictionLog(tmp_path, flush_s=0.1)
    try:
        for _ in range(10):
            log.log(fake_record(rng))
        deadline = time.monotonic() + 5
        while read_log(tmp_path).num_rows < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_log(tmp_path).num_rows == 10  # on disk without close()
        assert log.counters()["written"] == 10
    finally:
        log.close()


def test_files_per_hour_partition_and_merged_once_the_hour_is_over(tmp_path):
    rng = np.random.default_rng(0)
    log = PredictionLog(tmp_path, flush_s=3600)
    log._writer.clock = lambda: T0  # 10:15: hour 10 is the current hour
    hours = [T0, T0 + timedelta(minutes=30), T0 + timedelta(hours=1), T0 + timedelta(days=1)]
    for t in hours:
        log.log(fake_record(rng, ts=t))
        log.flush()
    by_hour = {p.parent.relative_to(tmp_path / "predictions").as_posix() for p in files_under(tmp_path)}
    assert by_hour == {"date=2026-11-30/hour=10", "date=2026-11-30/hour=11", "date=2026-12-01/hour=10"}
    assert len(files_under(tmp_path)) == 4  # one file per flush and hour, named by pid, token and seq
    assert all(p.name.startswith(f"part-{os.getpid()}-") for p in files_under(tmp_path))
    log._writer.clock = lambda: T0 + timedelta(hours=1)  # hour 10 is over: merged at the next flush
    log.flush()
    assert len(list((tmp_path / "predictions" / "date=2026-11-30" / "hour=10").iterdir())) == 1
    log.log(fake_record(rng, ts=T0 + timedelta(hours=1, minutes=5)))
    log.flush()
    assert len(files_under(tmp_path)) == 4
    log.close()  # close merges every hour it wrote, the current one too
    assert len(files_under(tmp_path)) == 3  # one file per hour and writer
    assert read_log(tmp_path).num_rows == 5
    assert not [p for p in (tmp_path / "predictions").rglob(".*")]  # no temp files left


def test_an_interrupted_merge_hides_its_sources(tmp_path):
    rng = np.random.default_rng(0)
    log = PredictionLog(tmp_path, flush_s=3600, merge=False)
    for _ in range(3):
        log.log(fake_record(rng, ts=T0))
        log.flush()
    log.close()
    files = files_under(tmp_path)
    merged = pa.concat_tables([pa.parquet.read_table(f) for f in files])
    lo, hi = files[0].stem.split("-")[-1], files[-1].stem.split("-")[-1]
    pa.parquet.write_table(merged, files[0].with_name(files[0].name.replace(f"-{lo}.parquet", f"-{lo}-{hi}.parquet")))
    assert read_log(tmp_path).num_rows == 3  # not 6: the merge's sources are shadowed
    assert store.visible_files([f.name for f in files_under(tmp_path)])[1] == sorted(f.name for f in files)


def test_bad_records_are_dropped_alone(tmp_path):
    rng = np.random.default_rng(0)
    log = PredictionLog(tmp_path, flush_s=3600)
    log.log(fake_record(rng))
    log.log("not a record")  # type: ignore[arg-type]
    log.log({"prediction_id": new_id(), "ts": datetime.now(UTC), "duration_s": "long"})  # type: ignore[arg-type]
    log.log(fake_record(rng))
    assert log.flush() == 2
    c = log.counters()
    assert c["errors"] == 2 and c["dropped"] == 2 and c["written"] == 2
    log.close()


def test_a_failed_write_is_retried(tmp_path):
    rng = np.random.default_rng(0)
    blocker = tmp_path / "predictions"
    blocker.write_text("a file where the table folder should be")
    log = PredictionLog(tmp_path, flush_s=3600)
    log.log(fake_record(rng))
    assert log.flush() == 0 and log.counters()["errors"] == 1 and log.pending == 1 and log.last_error
    blocker.unlink()
    assert log.flush() == 1 and read_log(tmp_path).num_rows == 1
    log.close()


KILL_SCRIPT = """
import os, signal, sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from ser.monitor.log import PredictionLog
from tests.monitor.conftest import fake_record
rng = np.random.default_rng(0)
log = PredictionLog(sys.argv[1], flush_s=0.2)
for _ in range(50):
    log.log(fake_record(rng))
deadline = time.monotonic() + 20
while log.counters()["written"] < 50 and time.monotonic() < deadline:
    time.sleep(0.02)
for _ in range(20):
    log.log(fake_record(rng))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_loses_at_most_the_last_flush_interval(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    res = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tmp_path), str(ROOT)], env=env, timeout=120)
    assert res.returncode == -9
    n = read_log(tmp_path).num_rows
    assert 50 <= n <= 70  # everything flushed before the kill is readable; at most the last interval is lost
    for f in files_under(tmp_path):
        if not f.name.startswith("."):
            pa.parquet.read_table(f)  # whole files only


# ----------------------------------------------------------------------------------------------------------------
# readers, retention, deletion


@pytest.fixture
def three_days(tmp_path):
    rng = np.random.default_rng(0)
    base = T0.replace(minute=0)  # records at hh:05 and hh:50 every 6 hours for 3 days
    records = [fake_record(rng, ts=base + timedelta(hours=h, minutes=m)) for h in range(0, 72, 6) for m in (5, 50)]
    append_records(tmp_path, records)
    return tmp_path, records


def test_read_log_window_and_columns(three_days):
    root, records = three_days
    lo, hi = T0 + timedelta(hours=6), T0 + timedelta(hours=12, minutes=50)  # 16:15 .. 23:05 (exclusive)
    t = read_log(root, since=lo, until=hi)
    assert sorted(t["prediction_id"].to_pylist()) == sorted(r.prediction_id for r in records if lo <= r.ts < hi)
    assert t.num_rows == 3  # 16:50, 22:05, 22:50
    cols = read_log(root, columns=["prediction_id", "label"])
    assert cols.column_names == ["prediction_id", "label"] and cols.num_rows == len(records)
    assert read_log(root, since="2026-12-05T00:00:00Z").num_rows == 0
    assert read_log(root / "nowhere").num_rows == 0
    from ser.errors import SerError

    with pytest.raises(SerError, match="unknown log column"):
        read_log(root, columns=["audio"])


def test_purge_deletes_whole_hours_and_rewrites_the_boundary(three_days):
    root, records = three_days
    now = T0.replace(minute=30) + timedelta(days=3)
    cutoff = now - timedelta(days=1.5)  # 2026-12-01 22:30: inside the hour of the records at 22:05 and 22:50
    counts = purge(root, 1.5, now=now)
    left = read_log(root)
    assert sorted(left["prediction_id"].to_pylist()) == sorted(r.prediction_id for r in records if r.ts >= cutoff)
    assert counts["predictions"]["boundary_rows_deleted"] == 1 and counts["predictions"]["hours_deleted"] == 6
    assert not (root / "predictions" / "date=2026-11-30").exists()  # emptied day folders go too


def test_delete_ids_rewrites_only_what_holds_them_and_issued_finds_ids(three_days):
    root, records = three_days
    gone = [records[3].prediction_id, records[10].prediction_id]
    assert issued(root, gone[0]) and not issued(root, new_id()) and not issued(root, "nope")
    before = {p: p.stat().st_mtime_ns for p in files_under(root)}
    assert delete_ids(root, gone) == {"predictions": 2, "feedback": 0}
    assert not set(gone) & set(read_log(root)["prediction_id"].to_pylist())
    assert read_log(root).num_rows == len(records) - 2
    changed = [p for p, m in before.items() if not p.exists() or p.stat().st_mtime_ns != m]
    assert len(changed) == 2  # the two files that held them
    assert not issued(root, gone[0])
    assert delete_ids(root, gone) == {"predictions": 0, "feedback": 0}  # idempotent
    from ser.errors import SerError

    with pytest.raises(SerError):
        delete_ids(root, ["not-an-id"])


def test_a_remote_log_through_fsspec():
    pytest.importorskip("fsspec")
    root = f"memory://ser-log-{new_id()}"
    rng = np.random.default_rng(0)
    with PredictionLog(root, flush_s=3600) as log:
        records = [fake_record(rng, ts=T0 + timedelta(hours=h)) for h in (0, 0, 1)]
        for r in records:
            log.log(r)
        log.flush()
    assert table_root(root, "predictions") == f"{root}/predictions"
    assert read_log(root).num_rows == 3
    assert issued(root, records[0].prediction_id)
    assert delete_ids(root, [records[0].prediction_id])["predictions"] == 1
    assert purge(root, 0, now=T0 + timedelta(hours=1, minutes=30))["predictions"]["hours_deleted"] == 1
    assert read_log(root)["prediction_id"].to_pylist() == []
