"""Safe, atomic extraction of a zip archive: every member is checked before anything is written.

``zipfile`` reads and writes the members. The member checks are written here because no library refuses an
unsafe zip: ``ZipFile.extract`` (and pooch's ``Unzip``, which calls it) silently rewrites ``../`` and absolute
names to stay inside the destination instead of refusing the archive, and ``tarfile``'s ``filter="data"``
(Python 3.11.4+) covers tar archives only. Extracting into a temporary folder and renaming each top-level entry
into place (so an interrupted run leaves either the old or the new entry) is written here too.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ser.errors import SerError

EXTRACT_PREFIX = ".ser_extract-"


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


def clean_stale(dest: Path) -> None:
    """Remove temporary extraction folders an interrupted run left in ``dest``."""
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
