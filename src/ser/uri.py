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
