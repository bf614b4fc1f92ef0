"""The output folder of ``ser batch``: partitioned Parquet, written part by part, and the resume state it holds.

Layout (Hive partitions by model version, so one folder can hold the same archive scored by several models)::

    OUT/segments/model_version=<v>/part-<run>-<seq>.parquet   one row per voiced segment (ser.batch.core)
    OUT/files/model_version=<v>/part-<run>-<seq>.parquet      one summary row per file and channel, or a failed row
    OUT/files/model_version=<v>/_batch.json                   the model and settings these rows were made with

The driver buffers finished files and writes them as one part: the segments part first, then the files part of
the same name, each committed whole. A file counts as done once its summary row is in a files part, so a run
killed at any point (kill -9 included) loses at most the part being buffered; on restart, a segments part without
its files part (killed between the two commits) and left-over temporary files are deleted, and the files already
done are skipped. Readers (pyarrow, pandas, DuckDB, Spark) skip the hidden and ``_`` files.

``OUT`` is a local folder (a path or ``file://``) or an object store URI (``gs://`` through gcsfs, ``s3://``,
``az://`` / ``abfs://``, ``memory://``). How a part is committed whole:

- local: written to a hidden temporary file beside it, then renamed into place (:func:`ser.io.atomic_path`);
- object store: uploaded as one object (:meth:`fsspec.AbstractFileSystem.pipe_file`); GCS, S3 and Azure make an
  object visible only once its upload completes (a killed upload leaves nothing), and an overwrite replaces the
  object whole, so readers and a resumed run see either no part or the whole part; GCS and S3 listings are
  strongly consistent, so a resumed run sees every part committed before. Object stores have no rename (gcsfs and
  s3fs copy then delete), hence no temporary files there.

Other fsspec protocols (``sftp://``, ``ftp://``, ``hdfs://``, ...) write a file in place as the bytes arrive, so a
killed run could leave half a part that would count as done: they are refused (:class:`ConfigError`) rather than
resumed wrongly; write to a local folder and copy it.

A folder holds one set of settings per model version: running again with other settings (channels, timeline
parameters) or another model under the same version is refused rather than mixing rows made differently.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ser.batch.archive import filesystem
from ser.batch.core import FAILED, FileResult, file_schema, segment_schema, to_table
from ser.errors import ConfigError, SerError
from ser.io import atomic_path, json_default

SEGMENTS = "segments"
FILES = "files"
SETTINGS_FILE = "_batch.json"
_PART = re.compile(r"^part-[0-9A-Za-z]+-\d+\.parquet$")
_UNSAFE = re.compile(r"[^0-9A-Za-z._@+-]+")
LOCAL_PROTOCOLS = ("file", "local")
OBJECT_STORE_PROTOCOLS = ("gs", "gcs", "s3", "s3a", "az", "abfs", "abfss", "memory")
"""fsspec protocols whose writes commit an object whole (a killed upload leaves nothing): safe for resuming."""


def check_output(out: str | Path) -> str | None:
    """The fsspec protocol of an output folder or URI (None for a plain path); :class:`ConfigError` for one whose
    writes are not atomic (see the module's notes). Reads nothing."""
    from fsspec.core import split_protocol

    protocol, _ = split_protocol(str(out))
    if protocol is not None and protocol not in LOCAL_PROTOCOLS + OBJECT_STORE_PROTOCOLS:
        raise ConfigError(
            f"--out {out}: {protocol}:// is not supported for output (a killed run could leave half-written parts "
            f"that count as done); use a local folder or {', '.join(p + '://' for p in OBJECT_STORE_PROTOCOLS)}"
        )
    return protocol


def output_filesystem(out: str | Path) -> tuple[Any, str, bool]:
    """``(fsspec filesystem, root path, is local)`` of an output folder or URI; :class:`ConfigError` for a protocol
    whose writes are not atomic (see the module's notes), an unknown protocol or a missing fsspec extra."""
    protocol = check_output(out)
    fs, root = filesystem(str(out))
    return fs, root.rstrip("/") or "/", protocol is None or protocol in LOCAL_PROTOCOLS


def partition_value(version: str) -> str:
    """A model version as a partition folder value (characters outside ``[0-9A-Za-z._@+-]`` become ``_``)."""
    return _UNSAFE.sub("_", version) or "_"


class BatchStore:
    """The output folder ``out`` (a local folder or an object store URI) for one model (``model``:
    :func:`ser.batch.worker.model_identity`) and one set of ``settings`` (a JSON-ready mapping)."""

    def __init__(self, out: str | Path, model: dict[str, Any], settings: dict[str, Any]):
        self.out = str(out)
        self.fs, self.root, self.local = output_filesystem(out)
        self.model = model
        self.labels: list[str] = list(model["labels"])
        self.settings = settings
        part = f"model_version={partition_value(str(model['version']))}"
        self.segments_dir = f"{self.root}/{SEGMENTS}/{part}"
        self.files_dir = f"{self.root}/{FILES}/{part}"
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + secrets.token_hex(3)
        self.seq = 0

    @property
    def arrow_fs(self) -> Any:
        """The filesystem argument for pyarrow: None (its own, faster) for a local folder, else the fsspec one."""
        return None if self.local else self.fs

    # ------------------------------------------------------------------------------------------------------------
    # opening: settings check, clean-up, resume state

    def open(self) -> dict[str, str]:
        """Check (or record) the settings, clean up after a killed run, and return the files already done:
        relative name → status (``ok`` / ``failed``)."""
        try:
            if self.fs.isfile(self.root):
                raise ConfigError(f"--out is a file, not a folder: {self.out}")
            if self.local:  # object stores have no folders (and gcsfs / s3fs makedirs would create a bucket)
                for folder in (self.files_dir, self.segments_dir):
                    self.fs.makedirs(folder, exist_ok=True)
            self._check_settings()
            self._clean()
            return self.done()
        except OSError as exc:  # storage: permissions, a bucket that does not exist, credentials
            raise SerError(f"cannot open --out {self.out}: {exc}") from None

    def _check_settings(self) -> None:
        record = {"model": self.model, "settings": self.settings}
        path = f"{self.files_dir}/{SETTINGS_FILE}"
        if self.fs.isfile(path):
            try:
                old = json.loads(self.fs.cat_file(path).decode("utf-8"))
            except (OSError, ValueError) as exc:
                raise SerError(f"{path}: unreadable ({exc})") from None
            if old != json.loads(json.dumps(record)):
                diff = sorted(k for k in {**old.get("settings", {}), **self.settings} if _differs(old, record, k))
                what = "another model" if old.get("model") != record["model"] else f"other settings ({', '.join(diff)})"
                raise ConfigError(
                    f"{self.out} holds results of model version {self.model['version']} made with {what}; "
                    "use another --out (or the same settings to resume)"
                )
        else:
            text = json.dumps(record, indent=2, default=json_default) + "\n"
            self._put(path, text.encode("utf-8"))

    def _clean(self) -> None:
        for folder in (self.segments_dir, self.files_dir) if self.local else ():  # temporary files are local only
            for tmp in self._glob(folder, ".part-*.tmp"):
                self.fs.rm_file(tmp)
        committed = {p.rsplit("/", 1)[-1] for p in self._glob(self.files_dir, "part-*.parquet")}
        for seg in self._glob(self.segments_dir, "part-*.parquet"):
            if seg.rsplit("/", 1)[-1] not in committed:  # killed between the two commits: its files were not done
                self.fs.rm_file(seg)

    def _glob(self, folder: str, pattern: str) -> list[str]:
        if not self.local:
            self.fs.invalidate_cache(folder)  # listings are cached per filesystem instance; another run may write
        return sorted(self.fs.glob(f"{folder}/{pattern}"))

    def done(self) -> dict[str, str]:
        """Relative name → status of every file with a summary row."""
        parts = self.parts(FILES)
        if not parts:
            return {}
        table = ds.dataset(parts, format="parquet", filesystem=self.arrow_fs).to_table(columns=["file", "status"])
        out: dict[str, str] = {}
        for f, st in zip(table["file"].to_pylist(), table["status"].to_pylist(), strict=True):
            out[f] = FAILED if FAILED in (st, out.get(f)) else st
        return out

    def parts(self, table: str) -> list[str]:
        """The committed parts of ``table`` (paths on :attr:`fs`)."""
        folder = self.files_dir if table == FILES else self.segments_dir
        return [p for p in self._glob(folder, "part-*.parquet") if _PART.match(p.rsplit("/", 1)[-1])]

    def forget_failed(self) -> int:
        """Remove the failed rows (so those files run again); each files part is rewritten whole. Returns how many
        were removed."""
        removed = 0
        schema = file_schema(self.labels)
        for path in self.parts(FILES):
            table = pq.read_table(path, schema=schema, filesystem=self.arrow_fs)
            failed = sum(1 for st in table["status"].to_pylist() if st == FAILED)
            if failed:
                self._put_table(path, table.filter(pc.not_equal(table["status"], FAILED)))
                removed += failed
        return removed

    # ------------------------------------------------------------------------------------------------------------
    # writing

    def write(self, results: Sequence[FileResult]) -> str | None:
        """Write ``results`` as one part (segments, then the files that commit them). Returns the part's name."""
        if not results:
            return None
        self.seq += 1
        name = f"part-{self.run_id}-{self.seq:05d}.parquet"
        segments = to_table([r for res in results for r in res.segments], segment_schema(self.labels))
        files = to_table([r for res in results for r in res.summaries], file_schema(self.labels))
        for folder, table in ((self.segments_dir, segments), (self.files_dir, files)):
            self._put_table(f"{folder}/{name}", table)
        return name

    def _put_table(self, path: str, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()  # a part is a few MB at most (part_files files' rows)
        pq.write_table(table, sink, compression="zstd")
        self._put(path, sink.getvalue().to_pybytes())

    def _put(self, path: str, data: bytes) -> None:
        """Commit ``data`` as the file ``path`` whole: locally a temporary file renamed into place, on an object
        store one upload."""
        try:
            if self.local:
                with atomic_path(path) as tmp:
                    tmp.write_bytes(data)
            else:
                self.fs.pipe_file(path, data)
        except OSError as exc:
            raise SerError(f"cannot write {path} under --out {self.out}: {exc}") from None


def _differs(old: dict[str, Any], new: dict[str, Any], key: str) -> bool:
    return json.dumps(old.get("settings", {}).get(key)) != json.dumps(new["settings"].get(key))


def read_table(out: str | Path, table: str = FILES, columns: Iterable[str] | None = None) -> pa.Table:
    """The ``segments`` or ``files`` table of an output folder or URI, every model version (the ``model_version``
    column comes from the partition folders, as a string)."""
    fs, root, local = output_filesystem(out)
    root = f"{root}/{table}"
    if not fs.isdir(root):
        raise SerError(f"no {table} table under {out}")
    part = ds.partitioning(pa.schema([("model_version", pa.string())]), flavor="hive")
    dataset = ds.dataset(root, format="parquet", partitioning=part, filesystem=None if local else fs)
    return dataset.to_table(columns=list(columns) if columns is not None else None)
