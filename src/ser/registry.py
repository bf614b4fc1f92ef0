"""The model registry: versioned model folders, the ``champion`` / ``challenger`` aliases, promotion rules.

Layout under a workdir (default ``./runs``, or ``$SER_WORKDIR``)::

    registry/<name>/<version>/model.onnx, metadata.json, MODEL_CARD.md   one folder per registered version
    registry/<name>/aliases.json                                       {"champion": 3, "challenger": 4}
    registry/<name>/events.jsonl                                       every registration / alias change, why

The files are the serving side's source of truth: reading them needs neither PyTorch nor MLflow, so the service
image stays small and a model folder can be copied anywhere. When tracking is on, every version is also a
version of the MLflow registered model of the same name (same version number, its source the folder) and the
aliases are mirrored there (:mod:`ser.tracking`).

Promotion (:func:`decide`): a candidate becomes champion only if there is no champion, or it beats the
champion's UAR on the *same evaluation* (same dataset fingerprint and split) by at least ``margin``, and its
largest per-group UAR gap stays within ``max_group_gap``. Otherwise it is the challenger, and the reason is
recorded in ``events.jsonl`` and in its metadata.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ser.errors import ConfigError, SerError
from ser.io import atomic_path, write_json
from ser.model_folder import CARD_FILE, METADATA_FILE, MODEL_FILE, read_metadata

DEFAULT_NAME = "ser-emotion"
ALIASES = ("champion", "challenger")
WORKDIR_ENV = "SER_WORKDIR"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def default_workdir() -> Path:
    """``$SER_WORKDIR`` when set, else ``./runs``."""
    return Path(os.environ.get(WORKDIR_ENV) or "runs")


def registry_root(workdir: str | Path) -> Path:
    return Path(workdir) / "registry"


def model_root(workdir: str | Path, name: str = DEFAULT_NAME) -> Path:
    if not _NAME.match(name):
        raise ConfigError(f"bad model name {name!r}: letters, digits, '_', '.', '-'")
    return registry_root(workdir) / name


def model_names(workdir: str | Path) -> list[str]:
    root = registry_root(workdir)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def versions(workdir: str | Path, name: str = DEFAULT_NAME) -> list[int]:
    """Registered version numbers of ``name``, ascending (folders holding a model and its metadata)."""
    root = model_root(workdir, name)
    if not root.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in root.iterdir()
        if p.name.isdigit() and (p / MODEL_FILE).is_file() and (p / METADATA_FILE).is_file()
    )


def read_aliases(workdir: str | Path, name: str = DEFAULT_NAME) -> dict[str, int]:
    """``{alias: version}`` of ``name`` (empty when none is set)."""
    path = model_root(workdir, name) / "aliases.json"
    if not path.is_file():
        return {}
    try:
        return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
    except (json.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
        raise SerError(f"{path}: unreadable aliases ({exc})") from None


def parse_ref(ref: str | None, default_name: str = DEFAULT_NAME) -> tuple[str, str | None, int | None]:
    """``NAME[@ALIAS|/VERSION]``, ``@ALIAS``, ``ALIAS`` or ``VERSION`` → ``(name, alias, version)``.

    >>> parse_ref("ser-emotion@champion")
    ('ser-emotion', 'champion', None)
    >>> parse_ref("3")
    ('ser-emotion', None, 3)
    """
    ref = (ref or "champion").strip()
    if ref in ALIASES or ref.startswith("@"):
        return default_name, ref.lstrip("@"), None
    if ref.isdigit():
        return default_name, None, int(ref)
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9_.-]*)(?:@([A-Za-z0-9_-]+)|/(\d+))?", ref)
    if not m:
        raise ConfigError(f"bad model reference {ref!r}: use NAME, NAME@ALIAS or NAME/VERSION")
    name, alias, version = m.group(1), m.group(2), m.group(3)
    if alias is None and version is None:
        alias = "champion"
    return name, alias, int(version) if version else None


def resolve(workdir: str | Path, ref: str | None = None) -> Path:
    """The model folder a reference points to (default: the champion of ``ser-emotion``)."""
    name, alias, version = parse_ref(ref)
    if alias is not None:
        aliases = read_aliases(workdir, name)
        if alias not in aliases:
            have = ", ".join(f"{a}=v{v}" for a, v in aliases.items()) or "none"
            raise SerError(f"model {name} has no {alias} in {registry_root(workdir)} (aliases: {have})")
        version = aliases[alias]
    path = model_root(workdir, name) / str(version)
    if version not in versions(workdir, name):
        raise SerError(f"model {name} version {version} is not registered in {registry_root(workdir)}")
    return path


# ----------------------------------------------------------------------------------------------------------------
# promotion rule (pure)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    *,
    margin: float = 0.0,
    max_group_gap: float | None = None,
) -> Decision:
    """Should ``candidate`` replace ``champion``? Both are metadata ``evaluation`` blocks: ``key`` (dataset
    fingerprint + split), ``uar`` (fraction) and ``max_group_gap`` (largest per-group UAR gap, or None)."""
    gap = candidate.get("max_group_gap")
    if max_group_gap is not None and gap is not None and gap > max_group_gap:
        return Decision(False, f"largest per-group UAR gap {gap:.3f} exceeds the bound {max_group_gap:.3f}")
    if champion is None:
        return Decision(True, "no champion yet")
    if candidate.get("key") != champion.get("key"):
        return Decision(
            False,
            "not comparable: the champion was evaluated on other data or splits "
            f"({champion.get('key')} vs {candidate.get('key')}); promote by hand after checking",
        )
    new, old = float(candidate["uar"]), float(champion["uar"])
    if new >= old + margin:
        return Decision(True, f"UAR {new:.4f} beats the champion's {old:.4f} by at least {margin:.4f}")
    return Decision(False, f"UAR {new:.4f} does not beat the champion's {old:.4f} by the margin {margin:.4f}")


# ----------------------------------------------------------------------------------------------------------------
# writes


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def log_event(workdir: str | Path, name: str, event: dict[str, Any]) -> None:
    path = model_root(workdir, name) / "events.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps({"time": _now(), **event}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def events(workdir: str | Path, name: str = DEFAULT_NAME) -> list[dict[str, Any]]:
    path = model_root(workdir, name) / "events.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill: skip it
    return out


def set_alias(workdir: str | Path, name: str, alias: str, version: int | None, reason: str) -> None:
    """Point ``alias`` at ``version`` (None removes it), atomically, and log why."""
    if alias not in ALIASES:
        raise ConfigError(f"alias must be one of {', '.join(ALIASES)}, got {alias!r}")
    if version is not None and version not in versions(workdir, name):
        raise SerError(f"model {name} version {version} is not registered")
    aliases = read_aliases(workdir, name)
    before = aliases.get(alias)
    if version is None:
        aliases.pop(alias, None)
    else:
        aliases[alias] = int(version)
    write_json(model_root(workdir, name) / "aliases.json", aliases)
    log_event(
        workdir, name, {"event": "alias", "alias": alias, "version": version, "previous": before, "reason": reason}
    )


def next_version(workdir: str | Path, name: str) -> int:
    root = model_root(workdir, name)
    taken = [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
    return max(taken, default=0) + 1


def add_version(
    workdir: str | Path, model_dir: str | Path, name: str = DEFAULT_NAME, version: int | None = None
) -> Path:
    """Copy a model folder into the registry as ``version`` (default: the next number); its metadata gets
    ``name``, ``version`` and ``registered``. Atomic: a killed copy leaves no version behind."""
    src = Path(model_dir)
    meta = read_metadata(src)
    version = version or next_version(workdir, name)
    dest = model_root(workdir, name) / str(version)
    if dest.exists():
        raise SerError(f"model {name} version {version} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    meta.update(name=name, version=str(version), registered=_now())
    write_json(tmp / METADATA_FILE, meta)
    if (tmp / CARD_FILE).is_file():  # the card names its version
        card = (tmp / CARD_FILE).read_text().replace("{{version}}", str(version))
        with atomic_path(tmp / CARD_FILE) as t:
            Path(t).write_text(card)
    tmp.rename(dest)
    log_event(workdir, name, {"event": "register", "version": version, "source": str(src)})
    return dest


def previous_champion(workdir: str | Path, name: str = DEFAULT_NAME) -> int | None:
    """The version that was champion before the current one (from the event log), if it is still registered."""
    current = read_aliases(workdir, name).get("champion")
    have = set(versions(workdir, name))
    for ev in reversed(events(workdir, name)):
        if ev.get("event") == "alias" and ev.get("alias") == "champion":
            prev = ev.get("previous")
            if prev is not None and prev != current and prev in have:
                return int(prev)
    return None


def show(workdir: str | Path, ref: str | None = None) -> dict[str, Any]:
    """Metadata of a registered model plus its folder and aliases."""
    path = resolve(workdir, ref)
    meta = read_metadata(path)
    name = meta.get("name", DEFAULT_NAME)
    aliases = [a for a, v in read_aliases(workdir, name).items() if str(v) == path.name]
    return {**meta, "path": str(path), "aliases": aliases}


@dataclass
class VersionRow:
    name: str
    version: int
    aliases: list[str]
    uar: float | None
    model: str
    registered: str
    path: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_versions(workdir: str | Path) -> list[VersionRow]:
    rows = []
    for name in model_names(workdir):
        aliases = read_aliases(workdir, name)
        for v in versions(workdir, name):
            path = model_root(workdir, name) / str(v)
            meta = read_metadata(path)
            ev = meta.get("evaluation") or {}
            rows.append(
                VersionRow(
                    name=name,
                    version=v,
                    aliases=[a for a, av in aliases.items() if av == v],
                    uar=ev.get("uar"),
                    model=str((meta.get("model") or {}).get("name", "?")),
                    registered=str(meta.get("registered", "")),
                    path=str(path),
                )
            )
    return rows
