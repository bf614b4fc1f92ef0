from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from ser.monitor.ids import is_valid, new_id, parse_id, ts_ms_of, ts_of


def test_ids_are_uuid7_with_the_rfc_layout():
    pid = new_id()
    u = uuid.UUID(pid)
    assert len(pid) == 36 and pid == str(u)
    assert u.version == 7 and u.variant == uuid.RFC_4122
    assert (u.int >> 76) & 0xF == 7 and (u.int >> 62) & 0b11 == 0b10


def test_ids_sort_by_time_and_are_unique_within_a_millisecond():
    ids = [new_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_ts_of_is_the_issue_time():
    before = datetime.now(UTC)
    pid = new_id()
    after = datetime.now(UTC)
    t = ts_of(pid)
    assert t.tzinfo is UTC
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= t <= after


def test_explicit_timestamp_round_trips():
    ms = int(datetime(2026, 11, 30, 23, 59, 59, 999000, tzinfo=UTC).timestamp() * 1000)
    pid = new_id(ms)
    assert ts_ms_of(pid) == ms
    assert ts_of(pid) == datetime(2026, 11, 30, 23, 59, 59, 999000, tzinfo=UTC)
    with pytest.raises(ValueError):
        new_id(-1)


@pytest.mark.parametrize(
    "bad", ["", "x" * 36, str(uuid.uuid4()), "0192f0c4-5c1e-7a3b-9f00-3c2d1e0f4a5", 42, None, "{" + str(uuid.uuid4())]
)
def test_malformed_ids_are_refused(bad):
    assert not is_valid(bad)
    with pytest.raises(ValueError):
        parse_id(bad)


def test_an_id_from_beyond_year_9999_is_not_valid():
    import uuid

    from ser.monitor import ids

    value = ((1 << 48) - 1) << 80 | (0x7 << 76) | (0b10 << 62)  # the largest 48-bit millisecond time
    far = str(uuid.UUID(int=value))
    assert not ids.is_valid(far)
    with pytest.raises(ValueError, match="9999"):
        ids.ts_of(far)
