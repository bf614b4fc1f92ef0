"""Prediction ids: UUIDv7 strings (RFC 9562), which sort by the time they were issued.

Layout of the 128 bits (RFC 9562 §5.7): ``unix_ts_ms`` (48 bits, milliseconds since the Unix epoch, big-endian),
``ver`` (4 bits, ``0111``), ``rand_a`` (12 bits), ``var`` (2 bits, ``10``), ``rand_b`` (62 bits). Python 3.11's
:mod:`uuid` has no ``uuid7`` (it arrives in 3.14), and a third-party package for 80 lines of bit layout is not
worth a dependency of the service, so the layout is written here by hand. ``rand_a`` is a counter within one
millisecond (RFC 9562 §6.2, method 1: fixed-length dedicated counter, seeded at random each millisecond), so
ids issued by one process are strictly increasing even within a millisecond; ``rand_b`` is 62 random bits
(:func:`os.urandom`), so ids from different processes do not collide.

Because the timestamp is inside the id, the log partition that holds a prediction is known from its id alone
(:func:`ts_of`): feedback look-ups and deletions read one hour of the log, not all of it.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
UUID7_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
"""The canonical lower-case UUIDv7 form of a prediction id (the API schema's pattern)."""
UUID7_FORM = re.compile(UUID7_PATTERN)

_MAX_TS_MS = (1 << 48) - 1
_COUNTER_MAX = (1 << 12) - 1
_lock = threading.Lock()
_last_ms = -1
_counter = 0


def _next_ts_and_counter(ts_ms: int | None) -> tuple[int, int]:
    """(timestamp ms, 12-bit counter), strictly increasing as a pair within this process for clock-driven ids."""
    global _last_ms, _counter
    if ts_ms is not None:  # an explicit time (tests, back-fills): random counter, no ordering promise
        return ts_ms, int.from_bytes(os.urandom(2), "big") & (_COUNTER_MAX >> 1)
    with _lock:
        now = time.time_ns() // 1_000_000
        if now > _last_ms:
            # seed the counter at random in its lower half, leaving room to count up within the millisecond
            _last_ms, _counter = now, int.from_bytes(os.urandom(2), "big") & (_COUNTER_MAX >> 1)
        else:  # same millisecond (or the clock stepped back): count up; on overflow borrow the next millisecond
            _counter += 1
            if _counter > _COUNTER_MAX:
                _last_ms, _counter = _last_ms + 1, 0
        return _last_ms, _counter


def new_id(ts_ms: int | None = None) -> str:
    """A new UUIDv7 as its canonical 36-character string (lower-case hex with dashes).

    ``ts_ms``: the timestamp to embed (ms since the epoch); default now. Ids made from the clock by one process
    are strictly increasing.
    """
    if ts_ms is not None and not 0 <= ts_ms <= _MAX_TS_MS:
        raise ValueError(f"timestamp out of range for UUIDv7: {ts_ms}")
    ms, counter = _next_ts_and_counter(ts_ms)
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


_MAX_TS_MS = int((datetime(9999, 12, 31, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000)
"""The last millisecond :func:`ts_of` can turn into a :class:`datetime` (1 Jan 10000 overflows it)."""


def parse_id(prediction_id: str) -> uuid.UUID:
    """The :class:`uuid.UUID` of a well-formed prediction id (canonical UUIDv7 string); else ``ValueError``."""
    if not isinstance(prediction_id, str) or len(prediction_id) != 36:
        raise ValueError(f"not a prediction id: {prediction_id!r}")
    try:
        u = uuid.UUID(prediction_id)
    except ValueError:
        raise ValueError(f"not a prediction id: {prediction_id!r}") from None
    if u.version != 7 or u.variant != uuid.RFC_4122 or str(u) != prediction_id.lower():
        raise ValueError(f"not a UUIDv7 prediction id: {prediction_id!r}")
    if (u.int >> 80) > _MAX_TS_MS:  # a time past what datetime holds: no service of ours issued it
        raise ValueError(f"prediction id from beyond year 9999: {prediction_id!r}")
    return u


def is_valid(prediction_id: object) -> bool:
    """True for a well-formed prediction id (a canonical UUIDv7 string)."""
    try:
        parse_id(prediction_id)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def ts_ms_of(prediction_id: str) -> int:
    """Milliseconds since the epoch embedded in a prediction id."""
    return parse_id(prediction_id).int >> 80


def ts_of(prediction_id: str) -> datetime:
    """The time a prediction id was issued (UTC, millisecond resolution)."""
    return _EPOCH + timedelta(milliseconds=ts_ms_of(prediction_id))
