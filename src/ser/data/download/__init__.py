"""Fetch a public corpus from its official record: resumable download, checksum check, safe atomic extraction.

The package splits into:

- :mod:`~ser.data.download.records`: the dataset records (:data:`RAVDESS`, :func:`get_dataset`) and reading a
  file's checksum and size from a Zenodo records API.
- :mod:`~ser.data.download.checksums`: ``md5:``/``sha256:`` checksums, parsed and checked against a file.
- :mod:`~ser.data.download.http`: :func:`download_file` streams a URL into a ``.partial`` file, resumes with
  an HTTP ``Range`` header from the partial file's size, copes with servers that ignore ``Range`` (restart
  from zero), retries connection errors and 429/5xx answers with exponential backoff (urllib3 ``Retry``) and
  draws a byte progress bar (size, rate, ETA) on stderr.
- :mod:`~ser.data.download.archive`: :func:`extract_zip` refuses members whose path escapes the destination
  (zip slip) or that are symbolic links, extracts into a temporary folder inside the destination and renames
  the top-level entries into place.
- :mod:`~ser.data.download.fetch`: :func:`fetch_dataset` chains them: resolve the expected checksum
  (``--checksum``, an explicit records API, the pinned value, or the default records API), download, verify,
  extract, and leave ``DEST/.ser_download.json``. A second run on a complete, verified folder is a no-op and
  makes no network request.

Each module's docstring says which library does what and why the rest is written by hand.

Environment overrides (for mirrors and tests): ``SER_<NAME>_URL`` (archive URL) and ``SER_<NAME>_API_URL``
(records API URL to read the checksum from), e.g. ``SER_RAVDESS_URL``.
"""

from ser.data.download.archive import EXTRACT_PREFIX, ZipPlan, check_member_name, extract_zip, plan_zip
from ser.data.download.checksums import (
    HASH_ALGORITHMS,
    file_checksum,
    format_checksum,
    parse_checksum,
    verify_file,
)
from ser.data.download.fetch import MARKER_NAME, FetchResult, fetch_dataset, read_marker
from ser.data.download.http import (
    PARTIAL_SUFFIX,
    USER_AGENT,
    TransferStats,
    download_file,
    parse_content_range,
    retrying_session,
)
from ser.data.download.records import (
    DATASETS,
    RAVDESS,
    Dataset,
    RemoteFile,
    fetch_remote_file,
    file_from_record,
    get_dataset,
)

__all__ = [
    "DATASETS",
    "EXTRACT_PREFIX",
    "HASH_ALGORITHMS",
    "MARKER_NAME",
    "PARTIAL_SUFFIX",
    "RAVDESS",
    "USER_AGENT",
    "Dataset",
    "FetchResult",
    "RemoteFile",
    "TransferStats",
    "ZipPlan",
    "check_member_name",
    "download_file",
    "extract_zip",
    "fetch_dataset",
    "fetch_remote_file",
    "file_checksum",
    "file_from_record",
    "format_checksum",
    "get_dataset",
    "parse_checksum",
    "parse_content_range",
    "plan_zip",
    "read_marker",
    "retrying_session",
    "verify_file",
]
