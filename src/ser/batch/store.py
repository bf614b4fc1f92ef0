"""The output folder of ``ser batch``: partitioned Parquet, written part by part, and the resume state it holds.

Layout (Hive partitions by model version, so one folder can hold the same archive scored by several models)::

    OUT/segments/model_version=<v>/part-<run>-<seq>.parquet   one row per voiced segment (ser.batch.core)
    OUT/files/model_version=<v>/part-<run>-<seq>.parquet      one summary row per file and channel, or a failed row
    OUT/files/model_version=<v>/_batch.json                   the model and settings these rows were made with

The driver buffers finished files and writes them as one part: the segments part first, then the files part of
the same name, each to a hidden temporary file renamed into place (:func:`ser.io.atomic_path`). A file counts as
done once its summary row is in a files part, so a run killed at any point (kill -9 included) loses at most the
part being buffered; on restart, a segments part without its files part (killed between the two renames) and
left-over temporary files are deleted, and the files already done are skipped. Readers (pyarrow, pandas, DuckDB,
Spark) skip the hidden and ``_`` files.

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

from ser.batch.core import FAILED, FileResult, file_schema, segment_schema, to_table
from ser.errors import ConfigError, SerError
from ser.io import atomic_path, write_json

SEGMENTS = "segments"
FILES = "files"
SETTINGS_FILE = "_batch.json"
_PART = re.compile(r"^part-[0-9A-Za-z]+-\d+\.parquet$")
_UNSAFE = re.compile(r"[^0-9A-Za-z._@+-]+")


def partition_value(version: str) -> str:
    """A model version as a partition folder value (characters outside ``[0-9A-Za-z._@+-]`` become ``_``)."""
    return _UNSAFE.sub("_", version) or "_"


class BatchStore:
    """The output folder ``out`` for one model (``model``: :func:`ser.batch.worker.model_identity`) and one set of
    ``settings`` (a JSON-ready mapping)."""

    def __init__(self, out: str | Path, model: dict[str, Any], settings: dict[str, Any]):
        self.out = Path(out)
        self.model = model
        self.labels: list[str] = list(model["labels"])
        self.settings = settings
        part = f"model_version={partition_value(str(model['version']))}"
        self.segments_dir = self.out / SEGMENTS / part
        self.files_dir = self.out / FILES / part
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + secrets.token_hex(3)
        self.seq = 0

    # ------------------------------------------------------------------------------------------------------------
    # opening: settings check, clean-up, resume state

    def open(self) -> dict[str, str]:
        """Check (or record) the settings, clean up after a killed run, and return the files already done:
        relative name → status (``ok`` / ``failed``)."""
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out is a file, not a folder: {self.out}")
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        self._check_settings()
        self._clean()
        return self.done()

    def _check_settings(self) -> None:
        record = {"model": self.model, "settings": self.settings}
        path = self.files_dir / SETTINGS_FILE
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
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
            write_json(path, record)

    def _clean(self) -> None:
        for folder in (self.segments_dir, self.files_dir):
            for tmp in folder.glob(".part-*.tmp"):
                tmp.unlink(missing_ok=True)
        committed = {p.name for p in self.files_dir.glob("part-*.parquet")}
        for seg in self.segments_dir.glob("part-*.parquet"):
            if seg.name not in committed:  # killed between the two renames: its files were not done
                seg.unlink()

    def done(self) -> dict[str, str]:
        """Relative name → status of every file with a summary row."""
        parts = self.parts(FILES)
        if not parts:
            return {}
        table = ds.dataset(parts, format="parquet").to_table(columns=["file", "status"])
        out: dict[str, str] = {}
        for f, st in zip(table["file"].to_pylist(), table["status"].to_pylist(), strict=True):
            out[f] = FAILED if FAILED in (st, out.get(f)) else st
        return out

    def parts(self, table: str) -> list[str]:
        folder = self.files_dir if table == FILES else self.segments_dir
        return sorted(str(p) for p in folder.glob("part-*.parquet") if _PART.match(p.name))

    def forget_failed(self) -> int:
        """Remove the failed rows (so those files run again); each files part is rewritten atomically. Returns how
        many were removed."""
        removed = 0
        schema = file_schema(self.labels)
        for path in self.parts(FILES):
            table = pq.read_table(path, schema=schema)
            failed = sum(1 for st in table["status"].to_pylist() if st == FAILED)
            if failed:
                mask = pc.not_equal(table["status"], FAILED)
                with atomic_path(path) as tmp:
                    pq.write_table(table.filter(mask), tmp)
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
            with atomic_path(folder / name) as tmp:
                pq.write_table(table, tmp, compression="zstd")
        return name


def _differs(old: dict[str, Any], new: dict[str, Any], key: str) -> bool:
    return json.dumps(old.get("settings", {}).get(key)) != json.dumps(new["settings"].get(key))


def read_table(out: str | Path, table: str = FILES, columns: Iterable[str] | None = None) -> pa.Table:
    """The ``segments`` or ``files`` table of an output folder, every model version (the ``model_version``
    column comes from the partition folders, as a string)."""
    root = Path(out) / table
    if not root.is_dir():
        raise SerError(f"no {table} table under {out}")
    part = ds.partitioning(pa.schema([("model_version", pa.string())]), flavor="hive")
    dataset = ds.dataset(str(root), format="parquet", partitioning=part)
    return dataset.to_table(columns=list(columns) if columns is not None else None)
