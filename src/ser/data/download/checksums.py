"""Archive checksums as ``"algo:hex"`` strings: parsing (md5 or sha256 only) and checking a file on disk.

Hashing a file is :func:`hashlib.file_digest` (Python 3.11+); only the ``algo:hex`` format and its validation
are written here.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ser.errors import ConfigError

HASH_ALGORITHMS = {"md5": 32, "sha256": 64}


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


def file_checksum(path: Path, algo: str) -> str:
    """``algo:hexdigest`` of a file, read in chunks by :func:`hashlib.file_digest`."""
    with open(path, "rb") as fh:
        return format_checksum(algo, hashlib.file_digest(fh, algo).hexdigest())


def verify_file(path: Path, checksum: str) -> tuple[bool, str]:
    """(matches, actual ``algo:hex``) for ``path`` against the expected ``checksum``."""
    algo, digest = parse_checksum(checksum)
    actual = file_checksum(path, algo)
    return actual == format_checksum(algo, digest), actual
