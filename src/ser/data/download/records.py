"""Dataset records: the corpora ``ser data download`` knows, and reading a file's checksum from a records API.

The records API GET is retried by urllib3's ``Retry`` (:func:`~ser.data.download.http.retrying_session`);
reading the Zenodo JSON (``files`` as a list, or ``files.entries`` as a dict/list) is written here, as no
maintained client library for that API is a dependency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from ser.data.download.checksums import format_checksum, parse_checksum
from ser.data.download.http import RETRY_STATUSES, USER_AGENT, retrying_session, short_reason
from ser.errors import SerError


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
        links = entry.get("links")
        if not isinstance(links, dict):
            links = {}
        link = links.get("content") or links.get("self") or links.get("download")
        return RemoteFile(format_checksum(algo, digest), int(size) if size is not None else None, link)
    keys = [str(e.get("key") or e.get("filename")) for e in files if isinstance(e, dict)]
    raise SerError(f"records API does not list {filename} (it lists: {', '.join(keys) or 'nothing'})")


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
    """GET a records API JSON (connection errors and 429/5xx retried by urllib3) and read ``filename``'s entry.

    A given ``session`` is used as is: its adapters decide the retries.
    """
    attempts = [1]

    def on_retry(reason: str, wait: float, n: int) -> None:
        attempts[0] += 1

    http = session or retrying_session(retries, backoff, sleep=sleep, on_retry=on_retry)
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    try:
        try:
            resp = http.get(api_url, headers=headers, timeout=timeout)
        except (
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidURL,
        ) as e:
            raise SerError(f"bad records API URL {api_url!r}: {e}") from None
        except requests.exceptions.RequestException as exc:
            reason = f"network error: {short_reason(exc)}"
        else:
            if resp.status_code == 200:
                try:
                    record = resp.json()
                except ValueError:
                    raise SerError(f"records API answer is not JSON: {api_url}") from None
                return file_from_record(record, filename)
            if resp.status_code not in RETRY_STATUSES:
                raise SerError(f"records API lookup failed: HTTP {resp.status_code} for {api_url}")
            reason = f"HTTP {resp.status_code}"
        raise SerError(f"records API lookup failed after {attempts[0]} attempt(s): {reason} ({api_url})")
    finally:
        if session is None:
            http.close()
