"""The prediction log: one record per answered prediction, written by the service, read by reports and DAGs.

**Layout.** A *log root* (a local folder or an fsspec URI, e.g. ``s3://bucket/ser-log``) holds two hour-partitioned
Parquet tables (:mod:`ser.monitor.store`)::

    <root>/predictions/date=YYYY-MM-DD/hour=HH/part-<pid>-<token>-<seq>.parquet     PredictionLog
    <root>/feedback/date=YYYY-MM-DD/hour=HH/part-<pid>-<token>-<seq>.parquet        ser.monitor.feedback

**What a record holds** (:data:`PREDICTION_SCHEMA`): ``prediction_id`` (UUIDv7, :mod:`ser.monitor.ids`), ``ts``
(UTC, ms; by default the id's own time, so the id names the partition), ``route`` (``/v1/predict``...), ``role``
(``primary``; ``shadow`` for a shadow model's answer to the same request, under the same id; ``canary`` for an
answer a canary model gave instead of the served one, :mod:`ser.monitor.canary`), ``model_name``,
``model_version``, ``duration_s`` (decoded audio, s), ``processing_ms``, the input statistics of
:class:`~ser.monitor.stats.InputStats` as columns, ``pcm_sha256`` (SHA-256 of the decoded 16 kHz PCM,
:func:`ser.audio.pcm_hash`: finds repeated uploads and serves deletion requests that come with the audio),
``client_name_hash`` (HMAC-SHA256 of the client's file name under a secret salt, or null; never the name), and the
output: ``label`` (null when there was no answer, e.g. no speech), ``confidence`` (the largest probability),
``probabilities`` aligned with ``labels`` (the model's class order).

**What it never holds:** audio samples, file names, client addresses, API keys. The only per-clip arrays are the
``n_mels`` band means / standard deviations and the ``n_classes`` probabilities.

**Writing.** :class:`PredictionLog` is what the service holds: :meth:`PredictionLog.log` puts a record on a
bounded queue and returns at once (never blocks, never raises; a full queue drops the record and counts it), a
background thread writes Parquet every ``flush_s`` seconds (default 2 s) and on :meth:`PredictionLog.close`. A
``kill -9`` loses at most the records of the last flush interval; everything flushed before is readable.

**Reading and retention.** :func:`read_log` (partition-pruned by hour, exact on ``ts``), :func:`iter_log`
(record batches), :func:`purge` (whole hours older than the cutoff, the boundary hour rewritten), :func:`delete_ids`
(rewrites the files that hold given ids, in both tables), :func:`issued` (was this id logged?).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from ser.errors import SerError
from ser.monitor import store
from ser.monitor.ids import is_valid, new_id, parse_id, ts_of
from ser.monitor.stats import SCALAR_FIELDS, InputStats
from ser.uri import is_remote

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
LOG_FORMAT = "ser-log/1"
ROLES = ("primary", "shadow", "canary")

_STAT_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("native_sr", pa.int32()),
    ("channels", pa.int32()),
    ("container", pa.string()),
    ("codec", pa.string()),
    *[(name, pa.float64()) for name in SCALAR_FIELDS],
    ("mel_mean", pa.list_(pa.float32())),
    ("mel_std", pa.list_(pa.float32())),
]

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("prediction_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        ("route", pa.string()),
        ("role", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("duration_s", pa.float64()),
        ("processing_ms", pa.float64()),
        ("pcm_sha256", pa.string()),
        ("client_name_hash", pa.string()),
        ("label", pa.string()),
        ("confidence", pa.float64()),
        ("labels", pa.list_(pa.string())),
        ("probabilities", pa.list_(pa.float32())),
        *_STAT_COLUMNS,
    ],
    metadata={"format": LOG_FORMAT, "table": PREDICTIONS},
)
"""Columns of the prediction table (format :data:`LOG_FORMAT`; later versions only add nullable columns)."""


def table_root(root: str | Path, table: str) -> str:
    """The folder (or URI) of ``table`` (:data:`PREDICTIONS`, :data:`FEEDBACK`) under a log root."""
    s = str(root)
    return f"{s.rstrip('/')}/{table}" if is_remote(s) else str(Path(s) / table)


def name_hash(name: str, salt: str | bytes) -> str:
    """HMAC-SHA256 of a client file name under a secret ``salt`` (hex, 32 characters). Without the salt the hash of
    a guessable name cannot be checked against guesses; with it, two uploads of one name can be matched."""
    key = salt.encode() if isinstance(salt, str) else salt
    return hmac.new(key, name.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]


# ----------------------------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class PredictionRecord:
    """One logged prediction (see the module docstring for the fields); build it with :func:`build_record`."""

    prediction_id: str
    ts: datetime
    route: str
    model_name: str
    model_version: str
    duration_s: float
    processing_ms: float
    pcm_sha256: str | None
    labels: tuple[str, ...]
    probabilities: tuple[float, ...]
    label: str | None
    confidence: float | None
    stats: InputStats | None = field(default=None, repr=False)
    client_name_hash: str | None = None
    role: str = "primary"

    def to_row(self) -> dict[str, Any]:
        """The record as a row of :data:`PREDICTION_SCHEMA`."""
        row: dict[str, Any] = {
            "prediction_id": self.prediction_id,
            "ts": self.ts,
            "route": self.route,
            "role": self.role,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "duration_s": float(self.duration_s),
            "processing_ms": float(self.processing_ms),
            "pcm_sha256": self.pcm_sha256,
            "client_name_hash": self.client_name_hash,
            "label": self.label,
            "confidence": self.confidence,
            "labels": list(self.labels),
            "probabilities": [float(p) for p in self.probabilities],
        }
        stats = self.stats.to_dict() if self.stats is not None else {}
        for name, _ in _STAT_COLUMNS:
            row[name] = stats.get(name)
        return row


_ARGMAX = object()


def build_record(
    *,
    route: str,
    model_name: str,
    model_version: str,
    probabilities: Mapping[str, float] | Sequence[float],
    labels: Sequence[str] | None = None,
    label: str | object | None = _ARGMAX,
    duration_s: float,
    processing_ms: float,
    stats: InputStats | None = None,
    pcm_sha256: str | None = None,
    prediction_id: str | None = None,
    ts: datetime | None = None,
    role: str = "primary",
    client_name: str | None = None,
    salt: str | bytes | None = None,
) -> PredictionRecord:
    """A :class:`PredictionRecord`, checked.

    ``probabilities``: a mapping label → p (as :class:`ser.inference.Prediction` has it) or a sequence aligned with
    ``labels``. ``label``: default the arg-max label; pass None for an answer without a label (no speech).
    ``pcm_sha256``: :func:`ser.audio.pcm_hash` of the decoded clip. ``prediction_id``: default a new UUIDv7
    (:func:`ser.monitor.ids.new_id`); ``ts``: default the id's time. ``client_name`` is stored only as
    :func:`name_hash` under ``salt``, and not at all without a salt. A bad argument is a ``ValueError``.
    """
    if isinstance(probabilities, Mapping):
        labels = list(probabilities) if labels is None else list(labels)
        probs = [float(probabilities[lab]) for lab in labels]
    else:
        if labels is None:
            raise ValueError("labels are required when probabilities is a sequence")
        labels, probs = list(labels), [float(p) for p in probabilities]
    if len(labels) != len(probs):
        raise ValueError(f"{len(probs)} probabilities for {len(labels)} labels")
    if label is _ARGMAX:
        label = labels[int(np.argmax(probs))] if probs else None
    if label is not None and label not in labels:
        raise ValueError(f"label {label!r} is not one of the model's labels")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    pid = prediction_id or new_id()
    parse_id(pid)
    when = ts_of(pid) if ts is None else store.utc(ts)
    assert when is not None
    return PredictionRecord(
        prediction_id=pid,
        ts=when,
        route=route,
        model_name=model_name,
        model_version=str(model_version),
        duration_s=float(duration_s),
        processing_ms=float(processing_ms),
        pcm_sha256=pcm_sha256,
        labels=tuple(str(lab) for lab in labels),
        probabilities=tuple(probs),
        label=None if label is None else str(label),
        confidence=float(max(probs)) if probs else None,
        stats=stats,
        client_name_hash=name_hash(client_name, salt) if client_name and salt else None,
        role=role,
    )


def _to_row(item: Any) -> dict[str, Any]:
    if isinstance(item, PredictionRecord):
        return item.to_row()
    if isinstance(item, Mapping):
        return dict(item)
    raise TypeError(f"not a prediction record: {type(item).__name__}")


# ----------------------------------------------------------------------------------------------------------------
# the writer the service holds


class RecentIds:
    """A bounded, thread-safe set of the most recently issued ids (oldest forgotten first)."""

    def __init__(self, maxlen: int = 100_000):
        self.maxlen = int(maxlen)
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, prediction_id: str) -> None:
        with self._lock:
            self._ids[prediction_id] = None
            if len(self._ids) > self.maxlen:
                self._ids.popitem(last=False)

    def __contains__(self, prediction_id: object) -> bool:
        with self._lock:
            return prediction_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


class PredictionLog:
    """The service's handle on the prediction log under ``root`` (a folder or an fsspec URI).

    ``flush_s``: seconds between writes (what a crash can lose); ``max_queue``: records held in memory before new
    ones are dropped (:attr:`dropped`); ``batch_rows``: a write starts early when this many records wait;
    ``recent``: how many issued ids :attr:`recent` remembers for feedback look-ups before they are on disk;
    ``merge``: merge each past hour's small files into one.

    Create one per worker process, after any fork (in the service's lifespan): its thread and its file names
    belong to the process that made it. Call :meth:`close` at shutdown; records still queued when the
    interpreter exits without it are lost (the thread is a daemon, so it never holds up an exit).

    >>> log = PredictionLog("/var/lib/ser/log")            # doctest: +SKIP
    >>> log.log(build_record(route="/v1/predict", ...))     # doctest: +SKIP
    >>> log.close()                                         # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | Path,
        *,
        flush_s: float = 2.0,
        max_queue: int = 10_000,
        batch_rows: int = 5_000,
        recent: int = 100_000,
        merge: bool = True,
    ):
        self.root = str(root)
        self.recent = RecentIds(recent)
        self._writer = store.PartitionedWriter(
            table_root(root, PREDICTIONS),
            PREDICTION_SCHEMA,
            _to_row,
            flush_s=flush_s,
            max_queue=max_queue,
            batch_rows=batch_rows,
            merge=merge,
            name="ser-prediction-log",
        )

    def log(self, record: PredictionRecord) -> bool:
        """Queue ``record``; False when it was dropped (queue full or log closed). Never blocks, never raises."""
        with contextlib.suppress(Exception):  # the promise is "never raises"
            self.recent.add(record.prediction_id)
        return self._writer.log(record)

    @property
    def dropped(self) -> int:
        return self._writer.dropped

    @property
    def pending(self) -> int:
        return self._writer.pending

    @property
    def flush_s(self) -> float:
        return self._writer.flush_s

    def counters(self) -> dict[str, int]:
        """``logged``, ``written``, ``dropped``, ``errors``, ``pending``, ``files`` since start (for metrics)."""
        return self._writer.counters()

    @property
    def last_error(self) -> str | None:
        return self._writer.last_error

    def flush(self) -> int:
        """Write the queued records now; returns how many were written."""
        return self._writer.flush()

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, merge this process's files per hour and stop the thread."""
        self._writer.close(timeout)

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------------------------
# readers, retention, deletion


def read_log(
    root: str | Path,
    since: store.TimeLike = None,
    until: store.TimeLike = None,
    columns: Iterable[str] | None = None,
    *,
    filter: ds.Expression | None = None,
) -> pa.Table:
    """Predictions with ``since <= ts < until`` (ISO strings, datetimes or spans back such as ``"24h"``; either
    optional) as a pyarrow Table (``.to_pandas()`` for a DataFrame); ``columns``: a projection."""
    cols = store.check_columns(columns, PREDICTION_SCHEMA)
    return store.read_table(table_root(root, PREDICTIONS), PREDICTION_SCHEMA, since, until, cols, filter)


def iter_log(
    root: str | Path,
    since: store.TimeLike = None,
    until: store.TimeLike = None,
    columns: Iterable[str] | None = None,
    *,
    filter: ds.Expression | None = None,
    batch_size: int = 131_072,
) -> Iterator[pa.RecordBatch]:
    """The rows of :func:`read_log` as record batches (bounded memory)."""
    cols = store.check_columns(columns, PREDICTION_SCHEMA)
    yield from store.iter_batches(
        table_root(root, PREDICTIONS), PREDICTION_SCHEMA, since, until, cols, filter, batch_size
    )


def append_records(root: str | Path, records: Iterable[PredictionRecord | Mapping[str, Any]]) -> int:
    """Write records synchronously (imports, tests, benchmarks); returns how many."""
    table = pa.Table.from_pylist([_to_row(r) for r in records], schema=PREDICTION_SCHEMA)
    store.append_table(table_root(root, PREDICTIONS), table)
    return table.num_rows


def purge(root: str | Path, older_than_days: float, *, now: datetime | None = None) -> dict[str, dict[str, int]]:
    """Retention: delete predictions and feedback older than ``older_than_days`` (whole hours; the hour holding the
    cutoff is rewritten). Returns the counts per table."""
    from ser.monitor.feedback import FEEDBACK_SCHEMA

    return {
        PREDICTIONS: store.purge(table_root(root, PREDICTIONS), PREDICTION_SCHEMA, older_than_days, now=now),
        FEEDBACK: store.purge(table_root(root, FEEDBACK), FEEDBACK_SCHEMA, older_than_days, now=now),
    }


def _checked_ids(ids: Iterable[str]) -> dict[str, datetime]:
    out = {}
    for i in ids:
        if not is_valid(i):
            raise SerError(f"not a prediction id: {i!r}")
        out[i] = ts_of(i)
    return out


def delete_ids(root: str | Path, ids: Iterable[str]) -> dict[str, int]:
    """Delete the predictions (all roles) and the feedback of ``ids``, rewriting only the files that hold them
    (predictions are looked for in the hour their id names and its neighbours; feedback, which arrives later, in
    every hour from then on). Idempotent. Returns rows deleted per table."""
    when = _checked_ids(ids)
    if not when:
        return {PREDICTIONS: 0, FEEDBACK: 0}
    from ser.monitor.feedback import FEEDBACK_SCHEMA

    pred = store.delete_keys(
        table_root(root, PREDICTIONS), PREDICTION_SCHEMA, "prediction_id", when, store.hours_of(when)
    )
    fb_root = table_root(root, FEEDBACK)
    earliest = store.hour_start(min(when.values()))
    fb_hours = [p.start for p in store.partitions(store.Store(fb_root), earliest, None)]
    fb = store.delete_keys(fb_root, FEEDBACK_SCHEMA, "prediction_id", when, fb_hours) if fb_hours else 0
    return {PREDICTIONS: pred, FEEDBACK: fb}


def issued(root: str | Path, prediction_id: str) -> bool:
    """True when ``prediction_id`` is in the prediction log on disk (reads the hour its id names and the
    neighbouring hours, one column). A malformed id is False. Records not flushed yet are not on disk: check
    :attr:`PredictionLog.recent` first."""
    if not is_valid(prediction_id):
        return False
    t = ts_of(prediction_id)
    hit = read_log(
        root,
        since=store.hour_start(t) - timedelta(hours=1),
        until=store.hour_start(t) + timedelta(hours=2),
        columns=["prediction_id"],
        filter=ds.field("prediction_id") == prediction_id,
    )
    return hit.num_rows > 0
