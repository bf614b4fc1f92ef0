"""The recordings of an archive: a local folder, a single file, or any fsspec URI (``file://``, ``gs://``,
``s3://``, ``memory://``; remote protocols need their fsspec extra: ``gcsfs``, ``s3fs``).

fsspec lists and opens every protocol alike, so the workers read each file by its URI themselves (on a Ray cluster
the driver ships names, never audio). A file is named by its path relative to the archive root (POSIX separators),
which keys it in the output tables and in the resume state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ser.errors import ConfigError, SerError

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "oga", "opus", "mp3", "aiff", "aif", "au", "caf", "w64", "rf64")
"""File endings listed by default: what libsndfile decodes."""


@dataclass(frozen=True)
class Recording:
    """One file of the archive: ``uri`` (what a worker opens), ``file`` (relative name), ``bytes`` on storage."""

    uri: str
    file: str
    bytes: int | None


def filesystem(uri: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path)`` of a folder, file or URI; :class:`ConfigError` for an unknown protocol or a
    missing extra."""
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - fsspec comes with the pipeline / monitor / scale extras
        raise ConfigError("ser batch needs fsspec (pip install 'ser[scale]')") from exc
    try:
        return fsspec.core.url_to_fs(str(uri))
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{uri}: {exc}") from None


def list_recordings(uri: str, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> list[Recording]:
    """The audio files under ``uri`` (recursively; hidden files and folders skipped), sorted by relative name. A
    single file is an archive of one. :class:`SerError` when ``uri`` does not exist."""
    fs, root = filesystem(uri)
    root = root.rstrip("/") or "/"
    try:
        if not fs.exists(root):
            raise SerError(f"archive not found: {uri}")
        if fs.isfile(root):
            info = fs.info(root)
            return [Recording(str(uri), root.rsplit("/", 1)[-1], info.get("size"))]
        found = fs.find(root, detail=True)
    except OSError as exc:
        raise SerError(f"cannot list {uri}: {exc}") from None
    exts = {e.lower().lstrip(".") for e in extensions}
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    out = []
    for path, info in found.items():
        rel = path[len(root) :].lstrip("/") if path.startswith(root) else path
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts) or rel.rsplit(".", 1)[-1].lower() not in exts:
            continue
        out.append(Recording(fs.unstrip_protocol(path) if protocol != "file" else path, rel, info.get("size")))
    return sorted(out, key=lambda r: r.file)
