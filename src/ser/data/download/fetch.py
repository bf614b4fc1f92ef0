""":func:`fetch_dataset`: resolve the expected checksum, download, verify, extract, record ``.ser_download.json``.

Orchestration of the records, HTTP, checksum and archive modules; the completion record (marker file) that
makes a second run on a complete folder a no-op without network is written here.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from ser.data.download.archive import clean_stale, extract_zip, plan_zip
from ser.data.download.checksums import format_checksum, parse_checksum, verify_file
from ser.data.download.http import PARTIAL_SUFFIX, TransferStats, download_file, log_noop, size_of
from ser.data.download.records import Dataset, fetch_remote_file
from ser.errors import ConfigError, SerError

MARKER_NAME = ".ser_download.json"


@dataclass
class FetchResult:
    """What :func:`fetch_dataset` did (``skipped`` = nothing to do, the folder was already complete)."""

    dataset: str
    dest: str
    url: str
    filename: str
    checksum: str
    checksum_source: str
    size: int | None
    skipped: bool
    entries: list[str]
    n_files: int
    resumed_from: int = 0
    received: int = 0
    restarted: bool = False
    archive: str | None = None
    licence: str = ""
    citation: str = ""
    marker: str = ""
    downloaded_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Http:
    """The HTTP settings :func:`fetch_dataset` passes to every request."""

    session: requests.Session | None
    retries: int
    backoff: float
    timeout: float | tuple[float, float]
    progress: bool
    log: Callable[[str], None]


def read_marker(dest: Path) -> dict[str, Any] | None:
    """The ``.ser_download.json`` record in ``dest``, or None when absent or unreadable."""
    path = dest / MARKER_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _complete(marker: dict[str, Any] | None, dataset: Dataset, dest: Path, checksum: str | None) -> bool:
    if not marker or marker.get("status") != "complete" or marker.get("dataset") != dataset.name:
        return False
    if checksum is not None and marker.get("checksum") != checksum:
        return False
    entries = marker.get("entries")
    return isinstance(entries, list) and bool(entries) and all((dest / str(e)).exists() for e in entries)


def _skipped(dataset: Dataset, dest: Path, marker: dict[str, Any], archive_url: str) -> FetchResult:
    return FetchResult(
        dataset=dataset.name,
        dest=str(dest),
        url=str(marker.get("url", archive_url)),
        filename=dataset.filename,
        checksum=str(marker["checksum"]),
        checksum_source=str(marker.get("checksum_source", "")),
        size=marker.get("size"),
        skipped=True,
        entries=[str(e) for e in marker["entries"]],
        n_files=int(marker.get("n_files", 0)),
        archive=marker.get("archive"),
        licence=dataset.licence,
        citation=dataset.citation,
        marker=str(dest / MARKER_NAME),
        downloaded_at=str(marker.get("downloaded_at", "")),
    )


def _lookup_checksum(dataset: Dataset, explicit_api: str | None, http: _Http) -> tuple[str, int | None]:
    lookup = explicit_api or dataset.api_url
    if not lookup:
        raise ConfigError(f"no checksum known for {dataset.name}; pass --checksum ALGO:HEX")
    http.log(f"reading the expected checksum from {lookup}")
    remote = fetch_remote_file(
        lookup, dataset.filename, session=http.session, retries=http.retries, backoff=http.backoff, timeout=http.timeout
    )
    return remote.checksum, remote.size


def _obtain_archive(
    dataset: Dataset, dest: Path, archive_url: str, expected: str, size: int | None, http: _Http
) -> tuple[Path, TransferStats]:
    """A verified ``DEST/<filename>``: the one already there when it matches, else downloaded and verified."""
    dest.mkdir(parents=True, exist_ok=True)
    clean_stale(dest)
    archive = dest / dataset.filename
    partial = dest / (dataset.filename + PARTIAL_SUFFIX)
    if archive.is_file():
        ok, _ = verify_file(archive, expected)
        if ok:
            http.log(f"using the verified archive already in {dest}")
            return archive, TransferStats()
        http.log(f"{archive.name} in {dest} does not match {expected}; downloading it again")
        archive.unlink()
    remaining = (size - size_of(partial)) if size is not None else 0
    free = shutil.disk_usage(dest).free
    if remaining > free:
        raise SerError(f"not enough disk space in {dest}: the download needs {remaining:,} bytes, {free:,} free")
    stats = download_file(
        archive_url,
        partial,
        expected_size=size,
        session=http.session,
        retries=http.retries,
        backoff=http.backoff,
        timeout=http.timeout,
        progress=http.progress,
        log=http.log,
    )
    http.log(f"verifying {expected.split(':')[0]} checksum")
    ok, actual = verify_file(partial, expected)
    if not ok:
        partial.unlink(missing_ok=True)
        raise SerError(
            f"checksum mismatch for {dataset.filename}: expected {expected}, got {actual}; "
            "the partial download was removed"
        )
    os.replace(partial, archive)
    return archive, stats


def _new_record(dataset: Dataset, archive_url: str, expected: str, source: str, now: str) -> dict[str, Any]:
    """The ``.ser_download.json`` fields known before extraction (size, entries and counts filled in later)."""
    return {
        "dataset": dataset.name,
        "status": "extracting",
        "url": archive_url,
        "filename": dataset.filename,
        "checksum": expected,
        "checksum_source": source,
        "size": None,
        "downloaded_at": now,
        "entries": [],
        "n_files": 0,
        "archive": None,
        "licence": dataset.licence,
        "citation": dataset.citation,
    }


def _extract(
    dataset: Dataset,
    dest: Path,
    archive: Path,
    marker: dict[str, Any] | None,
    keep_archive: bool,
    progress: bool,
    record: dict[str, Any],
) -> dict[str, Any]:
    """Extract ``archive`` with the marker saying ``extracting`` meanwhile and ``complete`` afterwards."""
    from ser.io import write_json

    plan = plan_zip(archive)
    owned = [str(e) for e in (marker or {}).get("entries", [])] if (marker or {}).get("dataset") == dataset.name else []
    record.update(
        status="extracting",
        size=size_of(archive),
        entries=sorted(set(owned) | set(plan.tops)),
        n_files=plan.n_files,
        archive=None,
    )
    write_json(dest / MARKER_NAME, record)
    extract_zip(archive, dest, owned=owned, plan=plan, progress=progress)
    kept: str | None = str(archive) if keep_archive else None
    if not keep_archive:
        archive.unlink(missing_ok=True)
    record.update(status="complete", entries=list(plan.tops), archive=kept)
    write_json(dest / MARKER_NAME, record)
    return record


def fetch_dataset(
    dataset: Dataset,
    dest: Path,
    *,
    url: str | None = None,
    checksum: str | None = None,
    api_url: str | None = None,
    keep_archive: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = log_noop,
    session: requests.Session | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float | tuple[float, float] = (15.0, 60.0),
    environ: dict[str, str] | None = None,
) -> FetchResult:
    """Download, verify and extract ``dataset`` into ``dest``; see the package docstring for the steps.

    The expected checksum comes from, in order: ``checksum``; the records API at ``api_url`` (or
    ``SER_<NAME>_API_URL``) when one is given; the dataset's pinned checksum; the dataset's default records API.
    The archive URL is ``url``, else ``SER_<NAME>_URL``, else the official one. Without a ``session``, each
    request gets one that retries (urllib3); a given session is used as is.
    """
    env = os.environ if environ is None else environ
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise SerError(f"--dest is not a folder: {dest}")
    archive_url = url or env.get(dataset.url_env) or dataset.url
    explicit_api = api_url or env.get(dataset.api_env)
    http = _Http(session, retries, backoff, timeout, progress, log)

    expected: str | None = None
    size: int | None = None
    source = ""
    if checksum:
        expected, source = format_checksum(*parse_checksum(checksum)), "option"
    elif not explicit_api and dataset.checksum:
        expected, size, source = dataset.checksum, dataset.size, "pinned"

    marker = read_marker(dest) if dest.is_dir() else None
    if _complete(marker, dataset, dest, expected):
        assert marker is not None
        return _skipped(dataset, dest, marker, archive_url)
    if expected is None:
        (expected, size), source = _lookup_checksum(dataset, explicit_api, http), "records-api"

    archive, stats = _obtain_archive(dataset, dest, archive_url, expected, size, http)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    record = _new_record(dataset, archive_url, expected, source, now)
    record = _extract(dataset, dest, archive, marker, keep_archive, progress, record)
    return FetchResult(
        dataset=dataset.name,
        dest=str(dest),
        url=archive_url,
        filename=dataset.filename,
        checksum=expected,
        checksum_source=source,
        size=record["size"],
        skipped=False,
        entries=list(record["entries"]),
        n_files=record["n_files"],
        resumed_from=stats.resumed_from,
        received=stats.received,
        restarted=stats.restarted,
        archive=record["archive"],
        licence=dataset.licence,
        citation=dataset.citation,
        marker=str(dest / MARKER_NAME),
        downloaded_at=now,
    )
