"""Hour-partitioned Parquet tables: the storage under the prediction log and the feedback log.

A table is a folder (a local path or any fsspec URI: ``s3://bucket/ser-log/predictions``)::

    <table>/date=YYYY-MM-DD/hour=HH/part-<pid>-<token>-<seq>.parquet            one flush of one writer
    <table>/date=YYYY-MM-DD/hour=HH/part-<pid>-<token>-<lo>-<hi>.parquet        a writer's flushes lo..hi, merged

Rows go to the partition of their own ``ts`` (UTC), not of the moment they are written. Each writer process
names its files by its pid and a random token drawn at start (pids are reused, by container restarts above all),
plus a counter, so concurrent writers (several service workers, several replicas on one bucket) never write the
same file and no file is ever appended to. A file appears whole or not at all: locally it is written to a hidden
temp file in the same folder (``.``-prefixed, ignored by readers) and renamed; on an object store the upload is
published whole when it completes.

Small files are merged: when an hour is over (and on close) a writer merges the files it wrote into that hour into
one ``part-<pid>-<token>-<lo>-<hi>.parquet`` and then deletes them. A crash between the two steps leaves both; the
readers' rule hides a file whose writer and seq range lie inside another file's range (:func:`visible_files`),
and the next purge, deletion or merge in that hour deletes it.

Readers list only the hour folders inside the requested window (partition pruning by folder name), then filter on
``ts`` exactly.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ser.errors import ConfigError, SerError
from ser.uri import is_remote, local_path

TimeLike = datetime | str | None
_PART = re.compile(r"^part-(\d+)-([0-9a-f]+)-(\d+)(?:-(\d+))?\.parquet$")
_DATE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_HOUR = re.compile(r"^hour=(\d{2})$")
FORGET_S = 3600.0
"""A writer forgets a past hour it has merged into one file once it wrote nothing there for this long."""


# ----------------------------------------------------------------------------------------------------------------
# time


def utc(t: TimeLike, *, now: datetime | None = None) -> datetime | None:
    """``t`` as an aware UTC datetime: a datetime (naive = UTC), an ISO 8601 string, or a span back from ``now``
    such as ``"24h"``, ``"7d"``, ``"30m"``; None stays None. A bad string is a :class:`ConfigError`."""
    if t is None or isinstance(t, datetime):
        return None if t is None else (t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC))
    s = str(t).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([mhdw])", s)
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: float(m.group(1))})
    try:
        return utc(datetime.fromisoformat(s.replace("Z", "+00:00")))
    except ValueError:
        raise ConfigError(f"not a time: {t!r} (ISO 8601 like 2026-11-30T12:00, or a span back like 24h, 7d)") from None


def hour_start(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def partition_of(t: datetime) -> str:
    """``date=YYYY-MM-DD/hour=HH`` of UTC time ``t``."""
    t = t.astimezone(UTC)
    return f"date={t:%Y-%m-%d}/hour={t:%H}"


# ----------------------------------------------------------------------------------------------------------------
# file system


class Store:
    """A table folder on the local disk (plain ``os`` calls, no fsspec needed) or behind an fsspec URI."""

    def __init__(self, root: str | Path):
        self.uri = str(root)
        self.remote = is_remote(self.uri)
        self.fs: Any = None
        if self.remote:
            try:
                import fsspec
            except ImportError as exc:  # pragma: no cover - fsspec comes with the monitor and pipeline extras
                raise ConfigError(f"{root}: a remote log needs fsspec (pip install -e .[monitor])") from exc
            self.fs, self.base = fsspec.core.url_to_fs(self.uri)
            self.base = self.base.rstrip("/")
        else:
            self.base = str(local_path(self.uri))

    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts]) if self.remote else os.path.join(self.base, *parts)

    def listdir(self, path: str) -> list[str]:
        """Names in folder ``path`` ([] when it does not exist)."""
        if self.remote:
            try:
                return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))
            except FileNotFoundError:
                return []
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def write_table(self, path: str, table: pa.Table) -> None:
        """Write ``table`` to ``path`` whole: temp file + rename locally, a single upload remotely."""
        if self.remote:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(path, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
            return
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def rm(self, path: str) -> None:
        try:
            if self.remote:
                self.fs.rm(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass

    def rmdir(self, path: str) -> None:
        """Remove folder ``path`` if it is empty (remote: object stores have no empty folders)."""
        if self.remote:
            try:
                if not self.fs.ls(path, detail=False):
                    self.fs.rmdir(path)
            except (FileNotFoundError, OSError):
                pass
            return
        with contextlib.suppress(OSError):
            os.rmdir(path)

    def dataset(self, files: list[str], schema: pa.Schema) -> ds.Dataset:
        return ds.dataset(files, schema=schema, format="parquet", filesystem=self.fs if self.remote else None)

    def read_file(self, path: str, schema: pa.Schema) -> pa.Table:
        return self.dataset([path], schema).to_table()


# ----------------------------------------------------------------------------------------------------------------
# partitions and files


@dataclass(frozen=True)
class Partition:
    """One hour folder of a table."""

    start: datetime
    rel: str

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=1)


def partitions(store: Store, since: datetime | None = None, until: datetime | None = None) -> list[Partition]:
    """Hour folders whose hour overlaps ``[since, until)`` (all without bounds), oldest first."""
    out = []
    for d in store.listdir(store.base):
        dm = _DATE.match(d)
        if not dm:
            continue
        day = datetime.strptime(dm.group(1), "%Y-%m-%d").replace(tzinfo=UTC)
        if (since and day + timedelta(days=1) <= since) or (until and day >= until):
            continue
        for h in store.listdir(store.path(d)):
            hm = _HOUR.match(h)
            if not hm:
                continue
            start = day + timedelta(hours=int(hm.group(1)))
            if (since and start + timedelta(hours=1) <= since) or (until and start >= until):
                continue
            out.append(Partition(start, f"{d}/{h}"))
    return sorted(out, key=lambda p: p.start)


def part_name(pid: int, token: str, lo: int, hi: int | None = None) -> str:
    return (
        f"part-{pid}-{token}-{lo:06d}.parquet"
        if hi is None or hi == lo
        else f"part-{pid}-{token}-{lo:06d}-{hi:06d}.parquet"
    )


def visible_files(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(visible, shadowed)`` Parquet file names of one hour folder. Hidden (``.``/``_``) names are neither.

    A writer's file is shadowed when another file of the same writer (pid and token) covers a seq range that
    contains its own (a merge that was interrupted before it deleted its sources). Other ``*.parquet`` names
    (written by other tools) are visible.
    """
    ranges: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    visible: list[str] = []
    shadowed: list[str] = []
    for name in names:
        if name.startswith((".", "_")) or not name.endswith(".parquet"):
            continue
        m = _PART.match(name)
        if not m:
            visible.append(name)
            continue
        lo = int(m.group(3))
        hi = int(m.group(4)) if m.group(4) else lo
        ranges.setdefault((m.group(1), m.group(2)), []).append((lo, hi, name))
    for files in ranges.values():
        for lo, hi, name in files:
            inside = any(lo2 <= lo and hi <= hi2 and (lo2, hi2) != (lo, hi) for lo2, hi2, _ in files)
            (shadowed if inside else visible).append(name)
    return sorted(visible), sorted(shadowed)


def partition_files(store: Store, part: Partition, *, cleanup: bool = False) -> list[str]:
    """Full paths of the visible files of one hour folder; ``cleanup`` deletes the shadowed ones."""
    visible, shadowed = visible_files(store.listdir(store.path(part.rel)))
    if cleanup:
        for name in shadowed:
            store.rm(store.path(part.rel, name))
    return [store.path(part.rel, n) for n in visible]


# ----------------------------------------------------------------------------------------------------------------
# reading


def _ts_filter(since: datetime | None, until: datetime | None, field: str = "ts") -> Any:
    expr = None
    if since is not None:
        expr = ds.field(field) >= pa.scalar(since, type=pa.timestamp("ms", tz="UTC"))
    if until is not None:
        e = ds.field(field) < pa.scalar(until, type=pa.timestamp("ms", tz="UTC"))
        expr = e if expr is None else expr & e
    return expr


def scan(
    root: str | Path,
    schema: pa.Schema,
    since: TimeLike = None,
    until: TimeLike = None,
    filter: Any = None,
) -> tuple[ds.Dataset | None, Any]:
    """``(dataset, filter expression)`` over the files of the hours overlapping ``[since, until)``, or
    ``(None, None)`` when there are none. ``filter``: an extra ``pyarrow.dataset`` expression (and-ed)."""
    store = Store(root)
    lo, hi = utc(since), utc(until)
    files = [f for p in partitions(store, lo, hi) for f in partition_files(store, p)]
    if not files:
        return None, None
    expr = _ts_filter(lo, hi)
    if filter is not None:
        expr = filter if expr is None else expr & filter
    return store.dataset(files, schema), expr


def read_table(
    root: str | Path,
    schema: pa.Schema,
    since: TimeLike = None,
    until: TimeLike = None,
    columns: list[str] | None = None,
    filter: Any = None,
) -> pa.Table:
    """Rows with ``since <= ts < until`` (either bound optional) as a pyarrow Table (``columns``: a projection)."""
    dataset, expr = scan(root, schema, since, until, filter)
    if dataset is None:
        empty = schema.empty_table()
        return empty.select(columns) if columns else empty
    return dataset.to_table(columns=columns, filter=expr)


def iter_batches(
    root: str | Path,
    schema: pa.Schema,
    since: TimeLike = None,
    until: TimeLike = None,
    columns: list[str] | None = None,
    filter: Any = None,
    batch_size: int = 131_072,
) -> Iterator[pa.RecordBatch]:
    """The rows of :func:`read_table` as record batches (bounded memory over long windows)."""
    dataset, expr = scan(root, schema, since, until, filter)
    if dataset is None:
        return
    yield from dataset.to_batches(columns=columns, filter=expr, batch_size=batch_size)


# ----------------------------------------------------------------------------------------------------------------
# writing, retention, deletion


def append_table(root: str | Path, table: pa.Table, *, pid: int | None = None, token: str | None = None) -> list[str]:
    """Write ``table`` (with a ``ts`` column) into the hour partitions of its rows, one new file per hour.

    For bulk writes (imports, benchmarks); the service writes through :class:`PartitionedWriter`. Returns the paths.
    """
    store = Store(root)
    pid = os.getpid() if pid is None else pid
    token = token or secrets.token_hex(4)
    if table.num_rows == 0:
        return []
    hours = pc.floor_temporal(table["ts"], unit="hour")
    out = []
    for seq, h in enumerate(sorted(set(hours.to_pylist()))):
        part = table.filter(pc.equal(hours, pa.scalar(h, type=hours.type)))
        path = store.path(partition_of(h), part_name(pid, token, seq))
        store.write_table(path, part)
        out.append(path)
    return out


def _rewrite(store: Store, path: str, schema: pa.Schema, keep: Callable[[pa.Table], Any]) -> int:
    """Rewrite one file keeping the rows where ``keep(table)`` (a boolean array) is true; delete it when none
    remain. Returns the number of rows removed."""
    try:
        table = store.read_file(path, schema)
    except (FileNotFoundError, OSError):
        return 0
    mask = keep(table)
    kept = table.filter(mask)
    removed = table.num_rows - kept.num_rows
    if removed == 0:
        return 0
    if kept.num_rows == 0:
        store.rm(path)
    else:
        store.write_table(path, kept)
    return removed


def _newer_than(cutoff: datetime) -> Callable[[pa.Table], Any]:
    limit = pa.scalar(cutoff, type=pa.timestamp("ms", tz="UTC"))
    return lambda t: pc.greater_equal(t["ts"], limit)


def purge(
    root: str | Path, schema: pa.Schema, older_than_days: float, *, now: datetime | None = None
) -> dict[str, int]:
    """Delete the rows older than ``now − older_than_days``: whole hour folders before the cutoff, and the rows
    before it in the hour that holds it (rewritten). Returns counts of hours, files and boundary rows removed."""
    if older_than_days < 0:
        raise ConfigError(f"older-than-days must be >= 0, got {older_than_days}")
    store = Store(root)
    cutoff = (utc(now) or datetime.now(UTC)) - timedelta(days=older_than_days)
    counts = {"hours_deleted": 0, "files_deleted": 0, "boundary_rows_deleted": 0}
    for part in partitions(store, None, cutoff):
        folder = store.path(part.rel)
        if part.end <= cutoff:
            for name in store.listdir(folder):
                store.rm(store.path(part.rel, name))
                counts["files_deleted"] += int(name.endswith(".parquet") and not name.startswith("."))
            store.rmdir(folder)
            counts["hours_deleted"] += 1
        else:
            keep = _newer_than(cutoff)
            for path in partition_files(store, part, cleanup=True):
                counts["boundary_rows_deleted"] += _rewrite(store, path, schema, keep)
    for d in store.listdir(store.base):
        if _DATE.match(d):
            store.rmdir(store.path(d))
    return counts


def delete_keys(
    root: str | Path, schema: pa.Schema, key: str, values: Iterable[str], hours: Iterable[datetime] | None
) -> int:
    """Delete every row whose ``key`` column is in ``values``; ``hours``: the only hour partitions to look in
    (None: all). Files are rewritten without those rows. Returns the number of rows deleted."""
    store = Store(root)
    wanted = pa.array(sorted(set(values)), type=pa.string())
    if len(wanted) == 0:
        return 0
    starts = None if hours is None else {hour_start(h) for h in hours}
    removed = 0
    for part in partitions(store):
        if starts is not None and part.start not in starts:
            continue
        for path in partition_files(store, part, cleanup=True):
            removed += _rewrite(store, path, schema, lambda t: pc.invert(pc.is_in(t[key], wanted)))
    return removed


# ----------------------------------------------------------------------------------------------------------------
# the background writer


class PartitionedWriter:
    """Rows → hour-partitioned Parquet files, written by a background thread; :meth:`log` never blocks or raises.

    ``to_row(item)`` turns a logged item into a dict of the ``schema``'s columns (with ``ts``); it runs on the
    writer thread, so the request path only pays for a ``put_nowait``. The queue holds at most ``max_queue``
    items: when it is full an item is dropped and counted (:attr:`dropped`), the caller is never held up. The thread
    writes every ``flush_s`` seconds (earlier when ``batch_rows`` items are waiting), one file per hour of the rows
    it writes, and merges a past hour's files once that hour is over (``merge``). :meth:`close` writes what is
    left and merges every hour it wrote.

    **What a crash loses.** A ``kill -9`` (or a power cut) loses the items still in memory: those logged since
    the last write, at most about ``flush_s`` seconds of them, plus a batch whose write failed and waits for its
    retry. Everything written before is in whole files that readers see.

    A write that fails (disk full, store unreachable) is counted in :attr:`errors` (reason in :attr:`last_error`)
    and retried at the next flush; rows waiting for a retry count against ``max_queue`` (the oldest are dropped).
    """

    def __init__(
        self,
        root: str | Path,
        schema: pa.Schema,
        to_row: Callable[[Any], dict[str, Any]],
        *,
        flush_s: float = 2.0,
        max_queue: int = 10_000,
        batch_rows: int = 5_000,
        merge: bool = True,
        name: str = "ser-log-writer",
    ):
        if flush_s <= 0 or max_queue < 1:
            raise ConfigError("flush_s must be > 0 and max_queue >= 1")
        self.root = str(root)
        self.store = Store(root)
        self.schema = schema
        self.to_row = to_row
        self.flush_s = float(flush_s)
        self.max_queue = int(max_queue)
        self.batch_rows = max(1, int(batch_rows))
        self.merge = merge
        self.pid = os.getpid()
        self.token = secrets.token_hex(4)
        self._q: queue.Queue[Any] = queue.Queue(maxsize=self.max_queue)
        self._count_lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._seq = 0
        self._retry: list[tuple[str, dict[str, Any]]] = []
        self._mine: dict[str, list[tuple[int, int, str]]] = {}  # partition rel → (lo, hi, name) of this writer
        self._touched: dict[str, float] = {}  # partition rel → monotonic time of this writer's last file there
        self.logged = self.dropped = self.written = self.errors = self.files = 0
        self.last_error: str | None = None
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        """What "now" is for deciding which hours are over (tests set it)."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- the request path ------------------------------------------------------------------------------------

    def log(self, item: Any) -> bool:
        """Queue ``item`` for writing; False (and :attr:`dropped` + 1) when the queue is full or the writer is
        closed. Never blocks, never raises."""
        try:
            if self._stop.is_set():
                raise queue.Full
            self._q.put_nowait(item)
        except queue.Full:
            with self._count_lock:
                self.dropped += 1
            return False
        except Exception:  # pragma: no cover - put_nowait raises nothing else; the promise is "never raises"
            with self._count_lock:
                self.dropped += 1
            return False
        with self._count_lock:
            self.logged += 1
        if self._q.qsize() >= self.batch_rows:
            self._wake.set()
        return True

    @property
    def pending(self) -> int:
        """Items logged and not yet written (queued, or waiting for a retry)."""
        return self._q.qsize() + len(self._retry)

    def counters(self) -> dict[str, int]:
        """``logged``, ``written``, ``dropped``, ``errors``, ``pending``, ``files`` (for metrics)."""
        return {
            "logged": self.logged,
            "written": self.written,
            "dropped": self.dropped,
            "errors": self.errors,
            "pending": self.pending,
            "files": self.files,
        }

    # -- the writer thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.flush()
            except Exception as exc:  # pragma: no cover - flush catches its own failures; the thread must live on
                self.last_error = f"flush failed: {type(exc).__name__}: {exc}"

    def _drain(self) -> list[tuple[str, dict[str, Any]]]:
        """Queued items as ``(partition, row)``; an item ``to_row`` cannot turn into a row is dropped alone."""
        rows, bad = self._retry, 0
        self._retry = []
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            try:
                row = self.to_row(item)
                rows.append((partition_of(row["ts"]), row))
            except Exception as exc:
                bad += 1
                self.last_error = f"bad record: {type(exc).__name__}: {exc}"
        if bad:
            self._count_bad(bad)
        return rows

    def _count_bad(self, n: int) -> None:
        with self._count_lock:
            self.errors += n
            self.dropped += n

    def _table(self, rows: list[dict[str, Any]]) -> pa.Table:
        """The rows as a table; rows of the wrong types are dropped one by one (counted), never the batch."""
        try:
            return pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            good = []
            for r in rows:
                try:
                    pa.Table.from_pylist([r], schema=self.schema)
                    good.append(r)
                except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                    self.last_error = f"bad record: {type(exc).__name__}: {exc}"
                    self._count_bad(1)
            return pa.Table.from_pylist(good, schema=self.schema)

    def flush(self) -> int:
        """Write every queued item now (called by the thread; callable from any thread). Returns rows written."""
        with self._io_lock:
            rows = self._drain()
            by_hour: dict[str, list[dict[str, Any]]] = {}
            for rel, r in rows:
                by_hour.setdefault(rel, []).append(r)
            done = 0
            for rel, part_rows in by_hour.items():
                table = self._table(part_rows)
                if table.num_rows == 0:
                    continue
                name = part_name(self.pid, self.token, self._seq)
                try:
                    self.store.write_table(self.store.path(rel, name), table)
                except Exception as exc:
                    self._note_failure(rel, table.to_pylist(), exc)
                    continue
                self._mine.setdefault(rel, []).append((self._seq, self._seq, name))
                self._touched[rel] = time.monotonic()
                self._seq += 1
                done += table.num_rows
                with self._count_lock:
                    self.written += table.num_rows
                    self.files += 1
            self._merge_past_hours()
            return done

    def _note_failure(self, rel: str, rows: list[dict[str, Any]], exc: Exception) -> None:
        self.last_error = f"write failed: {type(exc).__name__}: {exc}"
        with self._count_lock:
            self.errors += 1
        self._retry.extend((rel, r) for r in rows)
        over = len(self._retry) + self._q.qsize() - self.max_queue
        if over > 0:
            del self._retry[:over]
            with self._count_lock:
                self.dropped += over

    def _merge_past_hours(self, *, all_hours: bool = False) -> None:
        if not self.merge:
            return
        current = partition_of(self.clock())
        for rel, files in list(self._mine.items()):
            if rel < current and len(files) < 2 and time.monotonic() - self._touched.get(rel, 0.0) > FORGET_S:
                del self._mine[rel]  # a past hour in one file, not written for a while: forget it (bounded memory)
                self._touched.pop(rel, None)
                continue
            if len(files) < 2 or (rel >= current and not all_hours):
                continue
            try:
                self._merge(rel, files)
            except Exception as exc:  # merging is an optimisation: the small files stay readable
                self.last_error = f"merge failed: {type(exc).__name__}: {exc}"

    def _merge(self, rel: str, files: list[tuple[int, int, str]]) -> None:
        present = set(self.store.listdir(self.store.path(rel)))
        files = [f for f in files if f[2] in present]
        if len(files) < 2:
            self._mine[rel] = files
            return
        tables = [self.store.read_file(self.store.path(rel, n), self.schema) for _, _, n in files]
        lo, hi = min(f[0] for f in files), max(f[1] for f in files)
        name = part_name(self.pid, self.token, lo, hi)
        self.store.write_table(self.store.path(rel, name), pa.concat_tables(tables))
        for _, _, n in files:
            if n != name:
                self.store.rm(self.store.path(rel, n))
        self._mine[rel] = [(lo, hi, name)]

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop the thread, write what is queued and merge this writer's files per hour. Idempotent."""
        if self._stop.is_set() and not self._thread.is_alive():
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self.flush()
        with self._io_lock:
            self._merge_past_hours(all_hours=True)

    def __enter__(self) -> PartitionedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_columns(columns: Iterable[str] | None, schema: pa.Schema) -> list[str] | None:
    if columns is None:
        return None
    cols = list(columns)
    unknown = [c for c in cols if c not in schema.names]
    if unknown:
        raise SerError(f"unknown log column(s): {', '.join(unknown)}")
    return cols


def hours_of(values: Mapping[str, datetime]) -> set[datetime]:
    """The hour starts of some times, each with its neighbours (a row written at the turn of an hour)."""
    out = set()
    for t in values.values():
        h = hour_start(t)
        out.update({h - timedelta(hours=1), h, h + timedelta(hours=1)})
    return out
