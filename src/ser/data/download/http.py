"""Resumable HTTP download of one large file into a ``.partial`` file, with retries and a byte progress bar.

Library parts: connection errors and 429/5xx answers are retried by urllib3's ``Retry`` mounted on a requests
``Session`` through ``HTTPAdapter`` (:func:`retrying_session`); the bar is rich's ``Progress``.

Hand-written parts, and why:

- The ``Range`` resume loop of :func:`download_file`. Neither requests/urllib3 nor pooch resume a partial file
  (pooch's ``HTTPDownloader`` streams into a fresh temporary file, so a cut 200 MB transfer restarts from zero),
  and urllib3 cannot retry a body it already handed over (``stream=True``): a cut mid-body is resumed here with
  a new ``Range: bytes=N-`` request, and a server that ignores ``Range`` (200), refuses it (416) or resumes at
  the wrong byte is handled by restarting from zero. ``Content-Range`` parsing is a regex because neither
  library parses that header.
- :class:`BackoffRetry` subclasses urllib3's ``Retry`` only to keep the ``backoff * 2**k`` schedule from the
  first retry (urllib3 does not wait before the second attempt), to take an injectable ``sleep`` and to report
  each retry (the log line and the attempt count of the final error).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ser.errors import SerError

PARTIAL_SUFFIX = ".partial"
USER_AGENT = "ser-data-download/0.1 (python-requests)"
RETRY_STATUSES = frozenset({429, *range(500, 600)})
MAX_WAIT = 60.0
_BAD_URL = (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL)

OnRetry = Callable[[str, float, int], None]  # (reason, wait in seconds, retry number)


def log_noop(message: str) -> None:
    return None


def backoff_wait(backoff: float, failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failures (1, 2, ...): ``backoff * 2**(failures-1)``, ≤ 60."""
    return min(backoff * 2 ** (failures - 1), MAX_WAIT)


def size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


class BackoffRetry(Retry):
    """urllib3 ``Retry`` waiting :func:`backoff_wait` seconds (a server's ``Retry-After`` up to 60 s when longer),
    sleeping through ``sleep`` and calling ``on_retry(reason, wait, n)`` before each retry."""

    def __init__(
        self, *args: Any, sleep: Callable[[float], None] = time.sleep, on_retry: OnRetry | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.sleep_fn = sleep
        self.on_retry = on_retry

    def new(self, **kw: Any) -> BackoffRetry:
        retry = super().new(**kw)
        retry.sleep_fn, retry.on_retry = self.sleep_fn, self.on_retry
        return retry

    def get_backoff_time(self) -> float:
        failures = len(list(takewhile(lambda h: h.redirect_location is None, reversed(self.history))))
        return backoff_wait(self.backoff_factor, failures) if failures else 0.0

    def sleep(self, response: Any = None) -> None:
        wait = self.get_backoff_time()
        if response is not None and self.respect_retry_after_header:
            wait = max(wait, min(self.get_retry_after(response) or 0.0, MAX_WAIT))
        if self.on_retry is not None and self.history:
            last = self.history[-1]
            reason = f"HTTP {last.status}" if last.status else f"network error: {short_reason(last.error)}"
            self.on_retry(reason, wait, len(self.history))
        if wait > 0:
            self.sleep_fn(wait)


def retrying_session(
    retries: int, backoff: float, *, sleep: Callable[[float], None] = time.sleep, on_retry: OnRetry | None = None
) -> requests.Session:
    """A requests session whose http(s) adapters retry connection errors and 429/5xx answers ``retries`` times.

    When the retries are spent on a 429/5xx, the last answer is returned (not raised) so callers can name it.
    """
    retry = BackoffRetry(
        total=retries,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff,
        raise_on_status=False,
        sleep=sleep,
        on_retry=on_retry,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def short_reason(exc: BaseException | None) -> str:
    """A one-line reason for a requests/urllib3 exception: its OS error text when there is one, else a trimmed
    message."""
    if exc is None:
        return "unknown error"
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


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


def parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``"bytes 100-199/1000"`` → ``(100, 1000)``; ``"bytes */1000"`` → ``(None, 1000)``; unparsable → Nones."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


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


class _Failed(Exception):
    """An attempt failed. ``resumable``: the body was cut (resume with a new Range request); otherwise the
    session's own retries are spent."""

    def __init__(self, reason: str, resumable: bool) -> None:
        super().__init__(reason)
        self.resumable = resumable


@dataclass
class _Job:
    """What every attempt of one :func:`download_file` call shares."""

    url: str
    partial: Path
    session: requests.Session
    timeout: float | tuple[float, float]
    chunk_size: int
    bar: _ByteBar
    stats: TransferStats
    log: Callable[[str], None]


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
    log: Callable[[str], None] = log_noop,
    chunk_size: int = 1 << 16,
    sleep: Callable[[float], None] = time.sleep,
) -> TransferStats:
    """Stream ``url`` into ``partial``, resuming from its current size; return what was transferred.

    Each request retries connection errors and 429/5xx answers ``retries`` times (urllib3, via
    :func:`retrying_session`); a body cut mid-transfer is resumed with a new ``Range`` request, and ``retries``
    also bounds consecutive cuts without progress (one that received bytes resets the count). Waits grow as
    ``backoff * 2**k`` seconds (capped at 60). On giving up, raises :class:`SerError` and keeps ``partial`` so
    the next call resumes. A 4xx answer other than 416/429 fails at once. A given ``session`` is used as is:
    its adapters decide the per-request retries.
    """
    stats = TransferStats()

    def on_retry(reason: str, wait: float, n: int) -> None:
        stats.attempts += 1
        log(f"{reason}; retrying in {wait:.1f} s ({n}/{retries})")

    http = session or retrying_session(retries, backoff, sleep=sleep, on_retry=on_retry)
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _ByteBar(partial.name.removesuffix(PARTIAL_SUFFIX), progress) as bar:
            job = _Job(url, partial, http, timeout, chunk_size, bar, stats, log)
            return _resume_loop(job, expected_size, retries, backoff, sleep)
    finally:
        if session is None:
            http.close()


def _start_offset(partial: Path, expected_size: int | None, log: Callable[[str], None]) -> int:
    offset = size_of(partial)
    if expected_size is not None and offset > expected_size:
        log(f"partial file is larger than the archive ({offset} > {expected_size} bytes); restarting")
        partial.unlink()
        offset = 0
    return offset


def _resume_loop(
    job: _Job, expected_size: int | None, retries: int, backoff: float, sleep: Callable[[float], None]
) -> TransferStats:
    """Request from the partial file's size until the file is complete; see :func:`download_file`."""
    stats, partial = job.stats, job.partial
    offset = stats.resumed_from = _start_offset(partial, expected_size, job.log)
    if offset and not (expected_size is not None and offset == expected_size):
        job.log(f"resuming {partial.name} from {offset:,} bytes")
    failures = restarts = 0
    while True:
        if expected_size is not None and offset == expected_size and offset > 0:
            stats.size = offset
            return stats
        stats.attempts += 1
        received_before = stats.received
        try:
            done = _attempt(job, offset)
        except _Failed as exc:
            failures = 1 if stats.received > received_before else failures + 1
            if not exc.resumable or failures > retries:
                kept = size_of(partial)
                where = "nothing received"
                if kept:
                    where = f"partial file kept at {partial} ({kept:,} bytes), re-run to resume"
                raise SerError(f"download failed after {stats.attempts} attempt(s): {exc}; {where}") from None
            wait = backoff_wait(backoff, failures)
            job.log(f"{exc}; retrying in {wait:.1f} s ({failures}/{retries})")
            sleep(wait)
        else:
            if done:
                stats.size = size_of(partial)
                return stats
            restarts += 1
            stats.restarted = True
            if restarts > 3:
                raise SerError(f"download failed: the server keeps refusing to resume {job.url}")
        offset = _start_offset(partial, expected_size, job.log)


def _attempt(job: _Job, offset: int) -> bool:
    """One GET from ``offset``; True when the file is complete, False when it must restart from zero.

    Raises :class:`_Failed` or :class:`SerError`.
    """
    headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        job.stats.range_requests += 1
    try:
        resp = job.session.get(job.url, headers=headers, stream=True, timeout=job.timeout, allow_redirects=True)
    except _BAD_URL as e:
        raise SerError(f"bad download URL {job.url!r}: {e}") from None
    except requests.exceptions.RequestException as exc:
        raise _Failed(f"network error: {short_reason(exc)}", resumable=False) from None
    with resp:
        start = _body_start(resp, job, offset)
        if start is None:
            return True
        if start < 0:
            job.partial.unlink(missing_ok=True)
            return False
        _, total = parse_content_range(resp.headers.get("Content-Range")) if start else (None, None)
        if not start:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        job.bar.reset(start, total)
        _stream_body(resp, job, "ab" if start else "wb")
    size = size_of(job.partial)
    if total is not None and size < total:
        raise _Failed(f"connection closed after {size:,} of {total:,} bytes", resumable=True)
    if total is not None and size > total:
        job.partial.unlink(missing_ok=True)
        raise _Failed(f"received more bytes than announced ({size:,} > {total:,}); restarting", resumable=True)
    return True


def _body_start(resp: requests.Response, job: _Job, offset: int) -> int | None:
    """Where the answer's body goes in the partial file: ``offset`` (206), 0 (200, Range ignored), None when
    the partial file is already complete (416 at its size), -1 when the download must restart from zero."""
    status = resp.status_code
    if status == 416 and offset:
        _, total = parse_content_range(resp.headers.get("Content-Range"))
        if total == offset:
            return None
        job.log(f"the server refused to resume at byte {offset:,}; restarting from zero")
        return -1
    if status in RETRY_STATUSES:
        raise _Failed(f"HTTP {status} {resp.reason or ''}".strip(), resumable=False)
    if status not in (200, 206):
        raise SerError(f"download failed: HTTP {status} {resp.reason or ''} for {job.url}".replace("  ", " "))
    if status == 206:
        start, _ = parse_content_range(resp.headers.get("Content-Range"))
        if start != offset:
            job.log(f"the server resumed at byte {start} instead of {offset:,}; restarting from zero")
            return -1
        return offset
    if offset:
        job.log("the server ignored the Range request; restarting from zero")
        job.stats.restarted = True
    return 0


def _stream_body(resp: requests.Response, job: _Job, mode: str) -> None:
    """Write the answer's body to the partial file (append or overwrite), flushed to disk even when cut."""
    with open(job.partial, mode) as fh:
        try:
            for chunk in resp.iter_content(job.chunk_size):
                if chunk:
                    fh.write(chunk)
                    job.stats.received += len(chunk)
                    job.bar.advance(len(chunk))
        except requests.exceptions.RequestException as exc:
            raise _Failed(f"network error: {short_reason(exc)}", resumable=True) from None
        finally:
            fh.flush()
            os.fsync(fh.fileno())
