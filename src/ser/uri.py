"""Data and artefact locations as URIs: local paths by default, ``gs://``, ``s3://`` (any fsspec protocol) through
the fsspec extras (``gcsfs``, ``s3fs``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ser.errors import ConfigError, SerError


def is_remote(uri: str | Path) -> bool:
    """True for a URI with a scheme other than ``file``."""
    s = str(uri)
    return "://" in s and not s.startswith("file://")


def local_path(uri: str | Path) -> Path:
    """A local path from a plain path or a ``file://`` URI."""
    s = str(uri)
    return Path(s[len("file://") :]) if s.startswith("file://") else Path(s)


def local_copy(uri: str | Path, cache_dir: str | Path) -> Path:
    """A local folder (or file) holding ``uri``: the path itself when local, else a copy fetched with fsspec into
    ``cache_dir/<hash of the URI>`` (fetched once; delete the folder to fetch again)."""
    if not is_remote(uri):
        p = local_path(uri)
        if not p.exists():
            raise SerError(f"not found: {p}")
        return p
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - fsspec comes with the ml extra
        raise ConfigError(f"{uri}: remote data needs fsspec (and gcsfs / s3fs for gs:// / s3://)") from exc
    dest = Path(cache_dir) / hashlib.sha256(str(uri).encode()).hexdigest()[:16]
    done = dest / ".fetched"
    if done.is_file():
        return dest / "data"
    try:
        fs, path = fsspec.core.url_to_fs(str(uri))
        fs.get(path, str(dest / "data"), recursive=fs.isdir(path))
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{uri}: {exc}") from None
    except OSError as exc:
        raise SerError(f"{uri}: cannot fetch ({exc})") from None
    done.write_text(str(uri))
    return dest / "data"


def publish_folder(folder: str | Path, dest_uri: str) -> str:
    """Copy a local folder to ``dest_uri`` (a local path or any fsspec URI, e.g. ``s3://bucket/models/x/3``);
    returns the destination. Files are uploaded first, then a ``_COMPLETE`` marker, so readers can tell a whole
    copy from a partial one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SerError(f"not a folder: {folder}")
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover
        raise ConfigError("publishing needs fsspec") from exc
    fs, root = fsspec.core.url_to_fs(str(dest_uri))
    root = root.rstrip("/")
    try:
        fs.makedirs(root, exist_ok=True)
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                target = f"{root}/{p.relative_to(folder).as_posix()}"
                fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                fs.put_file(str(p), target)
        with fs.open(f"{root}/_COMPLETE", "w") as fh:
            fh.write("ok\n")
    except OSError as exc:
        raise SerError(f"cannot publish to {dest_uri}: {exc}") from None
    return str(dest_uri)


def publish_file(path: str | Path, dest_uri: str) -> str:
    """Copy one local file to ``dest_uri`` (path or fsspec URI)."""
    import fsspec

    fs, target = fsspec.core.url_to_fs(str(dest_uri))
    try:
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(path), target)
    except OSError as exc:
        raise SerError(f"cannot publish to {dest_uri}: {exc}") from None
    return str(dest_uri)
