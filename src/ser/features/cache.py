"""Content-addressed feature cache: one ``.npz`` per (feature kind, parameter hash, audio sha256).

Layout::

    <root>/<kind>/<kind_hash>/params.json          the parameters behind kind_hash (for people)
    <root>/<kind>/<kind_hash>/<sha[:2]>/<sha>.npz  arrays: "data" (+ "names" for utterance-level kinds)

``kind_hash`` is :meth:`ser.features.FeatureConfig.kind_hash`: it covers only the parameters that kind depends
on, so changing ``n_mfcc`` misses the ``mfcc`` and ``functionals`` entries but still hits ``logmel``. The audio
key is the SHA-256 of the file bytes (the manifest's ``sha256`` column), so a renamed or moved file still hits
and an edited one misses.

Entries are zip-compressed (about 2/3 of the raw float32 size; a 3.5 s clip's frame kinds take ~200 kB).
Files are written atomically (temporary file + rename), so concurrent workers and killed runs never leave a
half-written entry under its final name. An entry that cannot be read back (truncated, wrong content) is
reported as ``"corrupt"`` and treated as a miss: the caller recomputes and overwrites it.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any, cast

import numpy as np

from ser.errors import SerError
from ser.features import ALIGNED_KINDS, FeatureConfig
from ser.io import atomic_path, write_json

_SHA_RE = re.compile(r"^[0-9a-f]{16,128}$")


class FeatureCache:
    """Feature arrays on disk under ``root``. ``FeatureCache(None)`` is a disabled cache (always misses)."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def path(self, kind: str, kind_hash: str, sha: str) -> Path:
        """Where the entry for ``kind`` / ``kind_hash`` / audio ``sha`` lives."""
        if self.root is None:
            raise SerError("feature cache is disabled (no cache folder)")
        sha = str(sha).lower()
        if not _SHA_RE.match(sha):
            raise SerError(f"not a content hash (hex sha256 expected): {sha!r}")
        return self.root / kind / kind_hash / sha[:2] / f"{sha}.npz"

    def describe(self, kind: str, cfg: FeatureConfig) -> None:
        """Write ``<kind>/<kind_hash>/params.json`` once, recording what the hash stands for."""
        if self.root is None:
            return
        target = self.root / kind / cfg.kind_hash(kind) / "params.json"
        if not target.exists():
            write_json(target, cfg.params_for(kind))

    def lookup(self, kind: str, kind_hash: str, sha: str) -> tuple[dict[str, np.ndarray] | None, str]:
        """Return ``(arrays, status)``; status is ``"hit"``, ``"miss"`` (absent or disabled) or ``"corrupt"``."""
        if self.root is None:
            return None, "miss"
        path = self.path(kind, kind_hash, sha)
        if not path.is_file():
            return None, "miss"
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
            return None, "corrupt"
        return (arrays, "hit") if _valid(kind, arrays) else (None, "corrupt")

    def get(self, kind: str, kind_hash: str, sha: str) -> dict[str, np.ndarray] | None:
        """The cached arrays, or ``None`` on a miss or an unreadable entry."""
        return self.lookup(kind, kind_hash, sha)[0]

    def put(self, kind: str, kind_hash: str, sha: str, arrays: dict[str, np.ndarray]) -> Path | None:
        """Store ``arrays`` (at least ``"data"``) atomically; a no-op returning ``None`` when disabled."""
        if self.root is None:
            return None
        if not _valid(kind, arrays):
            raise SerError(f"refusing to cache an invalid {kind!r} entry")
        path = self.path(kind, kind_hash, sha)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file handle: np.savez would append ".npz"
            # numpy's stub types **kwds so that an "allow_pickle" key could land on that bool keyword; ours are arrays
            np.savez_compressed(fh, **cast("dict[str, Any]", arrays))
        return path


def _valid(kind: str, arrays: dict[str, np.ndarray]) -> bool:
    data = arrays.get("data")
    if data is None or data.dtype.kind != "f":
        return False
    if kind in ALIGNED_KINDS:
        return data.ndim == 2 and data.shape[1] > 0
    names = arrays.get("names")
    return data.ndim == 1 and names is not None and names.shape == data.shape and bool(np.all(np.isfinite(data)))
