"""Fetch a public corpus from its official record: resumable download, checksum check, safe atomic extraction.

A small pure core (dataset records, checksum parsing, reading a Zenodo record JSON, checking zip member paths)
and an I/O shell:

- :func:`download_file` streams a URL into a ``.partial`` file, resumes with an HTTP ``Range`` header from the
  partial file's size, copes with servers that ignore ``Range`` (restart from zero), retries connection errors
  and 5xx answers with exponential backoff, and draws a byte progress bar (size, rate, ETA) on stderr.
- :func:`extract_zip` refuses members whose path escapes the destination (zip slip) or that are symbolic
  links, extracts into a temporary folder inside the destination and renames the top-level entries into place.
- :func:`fetch_dataset` chains them: resolve the expected checksum (``--checksum``, an explicit records API,
  the pinned value, or the default records API), download, verify, extract, and leave ``DEST/.ser_download.json``.
  A second run on a complete, verified folder is a no-op and makes no network request.

Environment overrides (for mirrors and tests): ``SER_<NAME>_URL`` (archive URL) and ``SER_<NAME>_API_URL``
(records API URL to read the checksum from), e.g. ``SER_RAVDESS_URL``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import requests

from ser.errors import ConfigError, SerError

MARKER_NAME = ".ser_download.json"
EXTRACT_PREFIX = ".ser_extract-"
PARTIAL_SUFFIX = ".partial"
HASH_ALGORITHMS = {"md5": 32, "sha256": 64}
USER_AGENT = "ser-data-download/0.1 (python-requests)"


@dataclass(frozen=True)
class Dataset:
    """A downloadable corpus archive and what a user must know to use it.

    ``checksum`` is ``"md5:<hex>"`` or ``"sha256:<hex>"`` (None when only the records API can tell it);
    ``size`` is the archive size in bytes (None when unknown); ``api_url`` is a Zenodo records API URL whose
    ``files[]`` list carries ``key``, ``size`` and ``checksum`` for ``filename``.
    """

    name: str
    title: str
    url: str
    filename: str
    size: int | None
    checksum: str | None
    api_url: str | None
    licence: str
    citation: str
    homepage: str

    @property
    def url_env(self) -> str:
        return f"SER_{self.name.upper()}_URL"

    @property
    def api_env(self) -> str:
        return f"SER_{self.name.upper()}_API_URL"


# Zenodo record 1188976 (Livingstone & Russo 2018, version 1.0.0): the speech, audio-only archive.
# Size and md5 as listed for the file on the record (208,468,073 bytes).
RAVDESS = Dataset(
    name="ravdess",
    title="RAVDESS speech, audio-only (24 actors, 1440 clips, 48 kHz 16-bit WAV)",
    url="https://zenodo.org/records/1188976/files/Audio_Speech_Actors_01-24.zip?download=1",
    filename="Audio_Speech_Actors_01-24.zip",
    size=208_468_073,
    checksum="md5:bc696df654c87fed845eb13823edef8a",
    api_url="https://zenodo.org/api/records/1188976",
    licence="CC BY-NC-SA 4.0 (https://creativecommons.org/licenses/by-nc-sa/4.0/): non-commercial, attribution, "
    "share alike",
    citation="Livingstone SR, Russo FA (2018). The Ryerson Audio-Visual Database of Emotional Speech and Song "
    "(RAVDESS): A dynamic, multimodal set of facial and vocal expressions in North American English. "
    "PLoS ONE 13(5): e0196391. https://doi.org/10.1371/journal.pone.0196391 "
    "(data: https://doi.org/10.5281/zenodo.1188976)",
    homepage="https://zenodo.org/records/1188976",
)

DATASETS: dict[str, Dataset] = {RAVDESS.name: RAVDESS}


def get_dataset(name: str) -> Dataset:
    """The :class:`Dataset` called ``name`` (case-insensitive); a one-line error lists the known names."""
    key = name.strip().lower()
    if key not in DATASETS:
        raise SerError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[key]


# ----------------------------------------------------------------------------------------------- pure core


def parse_checksum(text: str) -> tuple[str, str]:
    """``"md5:ABC..."`` → ``("md5", "abc...")``; only md5 and sha256, with a hex digest of the right length."""
    algo, sep, digest = text.strip().partition(":")
    algo, digest = algo.strip().lower(), digest.strip().lower()
    if not sep or algo not in HASH_ALGORITHMS:
        raise ConfigError(f"bad checksum {text!r}: expected md5:<32 hex digits> or sha256:<64 hex digits>")
    if len(digest) != HASH_ALGORITHMS[algo] or not re.fullmatch(r"[0-9a-f]+", digest):
        raise ConfigError(f"bad checksum {text!r}: {algo} needs {HASH_ALGORITHMS[algo]} hex digits")
    return algo, digest


def format_checksum(algo: str, digest: str) -> str:
    return f"{algo}:{digest}"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a records API answer: its expected checksum (``algo:hex``), size in bytes and content link."""

    checksum: str
    size: int | None
    url: str | None


def file_from_record(record: dict[str, Any], filename: str) -> RemoteFile:
    """Find ``filename`` in a Zenodo records API JSON (``files`` as a list, or ``files.entries`` as a dict/list).

    Raises :class:`SerError` when the file is absent or carries no usable checksum.
    """
    files: Any = record.get("files") if isinstance(record, dict) else None
    if isinstance(files, dict):
        files = files.get("entries", [])
    if isinstance(files, dict):
        files = [dict(v, key=v.get("key", k)) for k, v in files.items() if isinstance(v, dict)]
    if not isinstance(files, list):
        raise SerError("records API answer has no files list")
    for entry in files:
        if not isinstance(entry, dict) or (entry.get("key") or entry.get("filename")) != filename:
            continue
        raw = entry.get("checksum")
        if not isinstance(raw, str):
            raise SerError(f"records API lists {filename} without a checksum")
        algo, digest = parse_checksum(raw)
        size = entry.get("size", entry.get("filesize"))
        links = entry.get("links") if isinstance(entry.get("links"), dict) else {}
        link = links.get("content") or links.get("self") or links.get("download")
        return RemoteFile(format_checksum(algo, digest), int(size) if size is not None else None, link)
    keys = [str(e.get("key") or e.get("filename")) for e in files if isinstance(e, dict)]
    raise SerError(f"records API does not list {filename} (it lists: {', '.join(keys) or 'nothing'})")


def check_member_name(name: str) -> PurePosixPath:
    """The relative path of a zip member; :class:`SerError` when it is absolute, has a drive or ``..`` parts."""
    norm = name.replace("\\", "/")
    path = PurePosixPath(norm)
    if not norm or norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or ".." in path.parts:
        raise SerError(f"unsafe archive member {name!r}: its path escapes the destination (zip slip)")
    return path


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


@dataclass(frozen=True)
class ZipPlan:
    """What a validated archive will extract: top-level entry names, file count and uncompressed bytes."""

    tops: tuple[str, ...]
    n_files: int
    n_bytes: int


def plan_zip(archive: Path) -> ZipPlan:
    """Validate every member of ``archive`` (zip slip, symbolic links) before anything is written."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise SerError(f"not a readable zip archive: {archive} ({exc})") from exc
    tops: set[str] = set()
    n_files = n_bytes = 0
    for info in infos:
        path = check_member_name(info.filename)
        if _is_symlink(info):
            raise SerError(f"unsafe archive member {info.filename!r}: symbolic links are not extracted")
        parts = [p for p in path.parts if p not in ("", ".")]
        if not parts:
            continue
        tops.add(parts[0])
        if not info.is_dir():
            n_files += 1
            n_bytes += info.file_size
    if not n_files:
        raise SerError(f"archive holds no files: {archive}")
    return ZipPlan(tuple(sorted(tops)), n_files, n_bytes)


# ------------------------------------------------------------------------------------------------ I/O shell


def file_checksum(path: Path, algo: str, chunk_size: int = 1 << 20) -> str:
    """``algo:hexdigest`` of a file, read in chunks."""
    digest = hashlib.new(algo)
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return format_checksum(algo, digest.hexdigest())


def verify_file(path: Path, checksum: str) -> tuple[bool, str]:
    """(matches, actual ``algo:hex``) for ``path`` against the expected ``checksum``."""
    algo, digest = parse_checksum(checksum)
    actual = file_checksum(path, algo)
    return actual == format_checksum(algo, digest), actual


class _Retry(Exception):
    """An attempt failed in a way worth retrying (connection error, 5xx, short body)."""


@dataclass
class TransferStats:
    """What :func:`download_file` did: bytes received in this call, the offset it resumed from, attempts."""

    received: int = 0
    resumed_from: int = 0
    attempts: int = 0
    restarted: bool = False  # the server ignored Range (answered 200) or refused it (416): started from zero
    range_requests: int = 0
    size: int = 0


class _ByteBar:
    """A rich byte progress bar on stderr (size, rate, ETA), or nothing when disabled."""

    def __init__(self, description: str, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        self._description = description

    def __enter__(self) -> _ByteBar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self._description, total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def reset(self, completed: int, total: int | None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, total=total)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


def parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``"bytes 100-199/1000"`` → ``(100, 1000)``; ``"bytes */1000"`` → ``(None, 1000)``; unparsable → Nones."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


def _log_noop(message: str) -> None:
    return None


def download_file(
    url: str,
    partial: Path,
    *,
    expected_size: int | None = None,
    session: requests.Session | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float | tuple[float, float] = (15.0, 60.0),
    progress: bool = True,
    log: Callable[[str], None] = _log_noop,
    chunk_size: int = 1 << 16,
    sleep: Callable[[float], None] = time.sleep,
) -> TransferStats:
    """Stream ``url`` into ``partial``, resuming from its current size; return what was transferred.

    ``retries`` counts consecutive failed attempts without progress (an attempt that received bytes resets the
    count); waits grow as ``backoff * 2**k`` seconds (capped at 60). On giving up, raises :class:`SerError` and
    keeps ``partial`` so the next call resumes. A 4xx answer other than 416/429 fails at once.
    """
    own_session = session is None
    session = session or requests.Session()
    stats = TransferStats()
    partial.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    restarts = 0
    first = True
    try:
        with _ByteBar(partial.name.removesuffix(PARTIAL_SUFFIX), progress) as bar:
            while True:
                offset = partial.stat().st_size if partial.exists() else 0
                if expected_size is not None and offset > expected_size:
                    log(f"partial file is larger than the archive ({offset} > {expected_size} bytes); restarting")
                    partial.unlink()
                    offset = 0
                if first:
                    stats.resumed_from = offset
                    first = False
                if expected_size is not None and offset == expected_size and offset > 0:
                    stats.size = offset
                    return stats
                if offset and restarts == 0 and stats.attempts == 0:
                    log(f"resuming {partial.name} from {offset:,} bytes")
                stats.attempts += 1
                received_before = stats.received
                try:
                    done, restart = _attempt(url, partial, offset, session, timeout, chunk_size, bar, stats, log)
                except _Retry as exc:
                    progressed = stats.received > received_before
                    failures = 1 if progressed else failures + 1
                    if failures > retries:
                        kept = _size(partial)
                        where = (
                            f"partial file kept at {partial} ({kept:,} bytes), re-run to resume"
                            if kept
                            else "nothing received"
                        )
                        raise SerError(f"download failed after {stats.attempts} attempt(s): {exc}; {where}") from None
                    wait = min(backoff * 2 ** (failures - 1), 60.0)
                    log(f"{exc}; retrying in {wait:.1f} s ({failures}/{retries})")
                    sleep(wait)
                    continue
                if restart:
                    restarts += 1
                    stats.restarted = True
                    if restarts > 3:
                        raise SerError(f"download failed: the server keeps refusing to resume {url}")
                    continue
                if done:
                    stats.size = _size(partial)
                    return stats
    finally:
        if own_session:
            session.close()


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _attempt(
    url: str,
    partial: Path,
    offset: int,
    session: requests.Session,
    timeout: float | tuple[float, float],
    chunk_size: int,
    bar: _ByteBar,
    stats: TransferStats,
    log: Callable[[str], None],
) -> tuple[bool, bool]:
    """One GET; returns (complete, restart-from-zero-needed). Raises _Retry or SerError."""
    headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        stats.range_requests += 1
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True) as resp:
            status = resp.status_code
            if status == 416 and offset:
                _, total = parse_content_range(resp.headers.get("Content-Range"))
                if total == offset:
                    return True, False
                log(f"the server refused to resume at byte {offset:,}; restarting from zero")
                partial.unlink(missing_ok=True)
                return False, True
            if status >= 500 or status == 429:
                raise _Retry(f"HTTP {status} {resp.reason or ''}".strip())
            if status not in (200, 206):
                raise SerError(f"download failed: HTTP {status} {resp.reason or ''} for {url}".replace("  ", " "))
            if status == 206:
                start, total = parse_content_range(resp.headers.get("Content-Range"))
                if start != offset:
                    log(f"the server resumed at byte {start} instead of {offset:,}; restarting from zero")
                    partial.unlink(missing_ok=True)
                    return False, True
                mode = "ab"
            else:
                if offset:
                    log("the server ignored the Range request; restarting from zero")
                    stats.restarted = True
                offset, mode = 0, "wb"
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            bar.reset(offset, total)
            with open(partial, mode) as fh:
                try:
                    for chunk in resp.iter_content(chunk_size):
                        if chunk:
                            fh.write(chunk)
                            stats.received += len(chunk)
                            bar.advance(len(chunk))
                finally:
                    fh.flush()
                    os.fsync(fh.fileno())
    except (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL) as e:
        raise SerError(f"bad download URL {url!r}: {e}") from None
    except requests.exceptions.RequestException as exc:
        raise _Retry(f"network error: {_short(exc)}") from None
    size = _size(partial)
    if total is not None and size < total:
        raise _Retry(f"connection closed after {size:,} of {total:,} bytes")
    if total is not None and size > total:
        partial.unlink(missing_ok=True)
        raise _Retry(f"received more bytes than announced ({size:,} > {total:,}); restarting")
    return True, False


def _short(exc: BaseException) -> str:
    """A one-line reason for a requests exception: its OS error text when there is one, else a trimmed message."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read timed out"
    text = " ".join(str(exc).split())
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        match = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected\)", text)
        if match:
            return f"connection broken ({int(match.group(2)):,} bytes short)"
        return "connection broken mid-transfer"
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match.group(1).strip().rstrip(".").lower()
    text = text or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def fetch_remote_file(
    api_url: str,
    filename: str,
    *,
    session: requests.Session | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float | tuple[float, float] = (15.0, 60.0),
    sleep: Callable[[float], None] = time.sleep,
) -> RemoteFile:
    """GET a records API JSON (with retries on connection errors and 5xx) and read ``filename``'s entry."""
    own_session = session is None
    session = session or requests.Session()
    try:
        for attempt in range(retries + 1):
            try:
                resp = session.get(
                    api_url, headers={"Accept": "application/json", "User-Agent": USER_AGENT}, timeout=timeout
                )
            except (
                requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema,
                requests.exceptions.InvalidURL,
            ) as e:
                raise SerError(f"bad records API URL {api_url!r}: {e}") from None
            except requests.exceptions.RequestException as exc:
                reason = f"network error: {_short(exc)}"
            else:
                if resp.status_code == 200:
                    try:
                        record = resp.json()
                    except ValueError:
                        raise SerError(f"records API answer is not JSON: {api_url}") from None
                    return file_from_record(record, filename)
                if resp.status_code < 500 and resp.status_code != 429:
                    raise SerError(f"records API lookup failed: HTTP {resp.status_code} for {api_url}")
                reason = f"HTTP {resp.status_code}"
            if attempt < retries:
                sleep(min(backoff * 2**attempt, 60.0))
        raise SerError(f"records API lookup failed after {retries + 1} attempt(s): {reason} ({api_url})")
    finally:
        if own_session:
            session.close()


def _clean_stale(dest: Path) -> None:
    for leftover in dest.glob(EXTRACT_PREFIX + "*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def extract_zip(
    archive: Path,
    dest: Path,
    *,
    owned: Iterable[str] = (),
    plan: ZipPlan | None = None,
    progress: bool = True,
) -> ZipPlan:
    """Extract a validated ``archive`` into ``dest`` atomically per top-level entry.

    Members go to a temporary folder inside ``dest`` first; then each top-level entry is renamed into place.
    An existing entry of the same name is replaced only if it is in ``owned`` (made by an earlier download);
    otherwise nothing is moved and :class:`SerError` names the conflict.
    """
    from ser.progress import track

    plan = plan or plan_zip(archive)
    owned = set(owned)
    conflicts = [t for t in plan.tops if (dest / t).exists() or (dest / t).is_symlink()]
    foreign = [t for t in conflicts if t not in owned]
    if foreign:
        raise SerError(
            f"{dest / foreign[0]} already exists and was not made by a previous download; "
            "move it away or choose another --dest"
        )
    free = shutil.disk_usage(dest).free
    if plan.n_bytes > free:
        raise SerError(f"not enough disk space in {dest}: extraction needs {plan.n_bytes:,} bytes, {free:,} free")
    tmp = Path(tempfile.mkdtemp(prefix=EXTRACT_PREFIX, dir=dest))
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in track(infos, "extracting", total=len(infos), enabled=progress):
                check_member_name(info.filename)  # already validated by plan_zip; cheap belt and braces
                zf.extract(info, tmp)
        for top in plan.tops:
            target = dest / top
            if target.exists() or target.is_symlink():
                _remove(target)
            os.replace(tmp / top, target)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SerError(f"extracting {archive.name} failed: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return plan


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


def read_marker(dest: Path) -> dict[str, Any] | None:
    """The ``.ser_download.json`` record in ``dest``, or None when absent or unreadable."""
    import json

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


@contextmanager
def _session(session: requests.Session | None) -> Iterator[requests.Session]:
    if session is not None:
        yield session
        return
    own = requests.Session()
    try:
        yield own
    finally:
        own.close()


def fetch_dataset(
    dataset: Dataset,
    dest: Path,
    *,
    url: str | None = None,
    checksum: str | None = None,
    api_url: str | None = None,
    keep_archive: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = _log_noop,
    session: requests.Session | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float | tuple[float, float] = (15.0, 60.0),
    environ: dict[str, str] | None = None,
) -> FetchResult:
    """Download, verify and extract ``dataset`` into ``dest``; see the module docstring for the steps.

    The expected checksum comes from, in order: ``checksum``; the records API at ``api_url`` (or
    ``SER_<NAME>_API_URL``) when one is given; the dataset's pinned checksum; the dataset's default records API.
    The archive URL is ``url``, else ``SER_<NAME>_URL``, else the official one.
    """
    from ser.io import write_json

    env = os.environ if environ is None else environ
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise SerError(f"--dest is not a folder: {dest}")
    archive_url = url or env.get(dataset.url_env) or dataset.url
    explicit_api = api_url or env.get(dataset.api_env)

    expected: str | None = None
    size: int | None = None
    source = ""
    if checksum:
        algo, digest = parse_checksum(checksum)
        expected, source = format_checksum(algo, digest), "option"
    elif not explicit_api and dataset.checksum:
        expected, size, source = dataset.checksum, dataset.size, "pinned"

    marker = read_marker(dest) if dest.is_dir() else None
    if _complete(marker, dataset, dest, expected):
        assert marker is not None
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

    with _session(session) as http:
        if expected is None:
            lookup = explicit_api or dataset.api_url
            if not lookup:
                raise ConfigError(f"no checksum known for {dataset.name}; pass --checksum ALGO:HEX")
            log(f"reading the expected checksum from {lookup}")
            remote = fetch_remote_file(
                lookup, dataset.filename, session=http, retries=retries, backoff=backoff, timeout=timeout
            )
            expected, size, source = remote.checksum, remote.size, "records-api"
        assert expected is not None

        dest.mkdir(parents=True, exist_ok=True)
        _clean_stale(dest)
        archive = dest / dataset.filename
        partial = dest / (dataset.filename + PARTIAL_SUFFIX)
        stats = TransferStats()
        have_archive = False
        if archive.is_file():
            ok, _ = verify_file(archive, expected)
            if ok:
                have_archive = True
                log(f"using the verified archive already in {dest}")
            else:
                log(f"{archive.name} in {dest} does not match {expected}; downloading it again")
                archive.unlink()
        if not have_archive:
            remaining = (size - _size(partial)) if size is not None else 0
            free = shutil.disk_usage(dest).free
            if remaining > free:
                raise SerError(
                    f"not enough disk space in {dest}: the download needs {remaining:,} bytes, {free:,} free"
                )
            stats = download_file(
                archive_url,
                partial,
                expected_size=size,
                session=http,
                retries=retries,
                backoff=backoff,
                timeout=timeout,
                progress=progress,
                log=log,
            )
            log(f"verifying {expected.split(':')[0]} checksum")
            ok, actual = verify_file(partial, expected)
            if not ok:
                partial.unlink(missing_ok=True)
                raise SerError(
                    f"checksum mismatch for {dataset.filename}: expected {expected}, got {actual}; "
                    "the partial download was removed"
                )
            os.replace(partial, archive)

    plan = plan_zip(archive)
    owned = [str(e) for e in (marker or {}).get("entries", [])] if (marker or {}).get("dataset") == dataset.name else []
    now = datetime.now(UTC).isoformat(timespec="seconds")
    record: dict[str, Any] = {
        "dataset": dataset.name,
        "status": "extracting",
        "url": archive_url,
        "filename": dataset.filename,
        "checksum": expected,
        "checksum_source": source,
        "size": _size(archive),
        "downloaded_at": now,
        "entries": sorted(set(owned) | set(plan.tops)),
        "n_files": plan.n_files,
        "archive": None,
        "licence": dataset.licence,
        "citation": dataset.citation,
    }
    write_json(dest / MARKER_NAME, record)
    extract_zip(archive, dest, owned=owned, plan=plan, progress=progress)
    kept: str | None = str(archive) if keep_archive else None
    if not keep_archive:
        archive.unlink(missing_ok=True)
    record.update(status="complete", entries=list(plan.tops), archive=kept)
    write_json(dest / MARKER_NAME, record)
    return FetchResult(
        dataset=dataset.name,
        dest=str(dest),
        url=archive_url,
        filename=dataset.filename,
        checksum=expected,
        checksum_source=source,
        size=record["size"],
        skipped=False,
        entries=list(plan.tops),
        n_files=plan.n_files,
        resumed_from=stats.resumed_from,
        received=stats.received,
        restarted=stats.restarted,
        archive=kept,
        licence=dataset.licence,
        citation=dataset.citation,
        marker=str(dest / MARKER_NAME),
        downloaded_at=now,
    )
