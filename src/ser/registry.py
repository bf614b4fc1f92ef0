"""The model registry: versioned model folders, the ``champion`` / ``challenger`` aliases, promotion rules.

Layout under a workdir (default ``./runs``, or ``$SER_WORKDIR``)::

    registry/<name>/<version>/model.onnx, metadata.json, MODEL_CARD.md   one folder per registered version
    registry/<name>/aliases.json                                       {"champion": 3, "challenger": 4}
    registry/<name>/events.jsonl                                       every registration / alias change, why

The files are the serving side's source of truth: reading them needs neither PyTorch nor MLflow, so the service
image stays small and a model folder can be copied anywhere. When tracking is on, every version is also a
version of the MLflow registered model of the same name (same version number, its source the folder) and the
aliases are mirrored there (:mod:`ser.tracking`).

Promotion, on a **gate set** (:func:`decide_gate`): labelled utterances neither model was trained on (a
speaker-disjoint share of each new data source, set aside before any split; the utterances either model records in
its ``trained_on.txt`` are removed first, :func:`unseen_gate`), both models scored with onnxruntime. The candidate
becomes champion if the speaker-bootstrap 95 % CI of its UAR gain over the champion reaches ``margin`` (``rule =
"ci"``; ``"point"``: the gain itself) and its largest per-group UAR gap on the gate set stays within
``max_group_gap``. Without a gate set (:func:`decide`): it must beat the champion's UAR on the *same evaluation*
(same dataset fingerprint and split) by at least ``margin``. A group gap that cannot be computed (fewer than two
groups large enough) is an explicit outcome: ``on_missing_group = "block"`` keeps the candidate out, ``"allow"``
lets it through with the fact in the reason. Otherwise it is the challenger; the decision, both scores, the gate
set's size and the reason are recorded in ``events.jsonl`` and in its metadata.
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
    outcome: str = ""
    """A short code: ``first``, ``better``, ``not_better``, ``group_gap``, ``missing_group``, ``not_comparable``,
    ``gate_too_small``."""


MISSING_GROUP_CHOICES = ("block", "allow")


def _gap_check(
    gap: float | None, max_group_gap: float | None, on_missing_group: str, group: str, where: str
) -> tuple[Decision | None, str]:
    """The group-gap rule: ``(a blocking Decision or None, a note for the reason)``."""
    if on_missing_group not in MISSING_GROUP_CHOICES:
        raise ConfigError(f"on_missing_group must be block or allow, got {on_missing_group!r}")
    if max_group_gap is None:
        return None, ""
    if gap is None:
        why = f"the {group} UAR gap {where} cannot be computed (fewer than two {group} groups with enough utterances)"
        if on_missing_group == "block":
            return Decision(False, f"{why}; register.on_missing_group=block", "missing_group"), ""
        return None, f"{why}; allowed by register.on_missing_group=allow. "
    if gap > max_group_gap:
        return (
            Decision(
                False,
                f"largest per-group UAR gap {gap:.3f} {where} exceeds the bound {max_group_gap:.3f}",
                "group_gap",
            ),
            "",
        )
    return None, ""


def decide(
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    *,
    margin: float = 0.0,
    max_group_gap: float | None = None,
    on_missing_group: str = "allow",
    note: str = "",
) -> Decision:
    """Should ``candidate`` replace ``champion`` when there is no gate set? Both are metadata ``evaluation``
    blocks: ``key`` (dataset fingerprint + split), ``uar`` (fraction), ``max_group_gap`` (largest per-group UAR
    gap, or None) and ``group``. ``note`` starts the reason (e.g. why there is no gate set)."""
    group = str(candidate.get("group") or "group")
    blocked, gap_note = _gap_check(
        candidate.get("max_group_gap"), max_group_gap, on_missing_group, group, "in cross-validation"
    )
    note = note + gap_note
    if blocked is not None:
        return Decision(False, note + blocked.reason, blocked.outcome)
    if champion is None:
        return Decision(True, note + "no champion yet", "first")
    if candidate.get("key") != champion.get("key"):
        return Decision(
            False,
            note + "not comparable: the champion was evaluated on other data or splits "
            f"({champion.get('key')} vs {candidate.get('key')}); promote by hand after checking",
            "not_comparable",
        )
    new, old = float(candidate["uar"]), float(champion["uar"])
    if new >= old + margin:
        return Decision(True, note + f"UAR {new:.4f} beats the champion's {old:.4f} by at least {margin:.4f}", "better")
    return Decision(
        False, note + f"UAR {new:.4f} does not beat the champion's {old:.4f} by the margin {margin:.4f}", "not_better"
    )


def unseen_gate(
    gate_hashes: list[str], candidate_seen: set[str] | None, champion_seen: set[str] | None
) -> dict[str, Any]:
    """Which gate utterances (by content hash) neither model was trained on.

    ``*_seen``: the hashes a model's ``trained_on.txt`` records (None: it records none, so what it saw is unknown
    and cannot be checked). Returns ``{"keep": [bool per gate utterance], "n", "n_unseen", "candidate_seen",
    "champion_seen", "champion_checked", "candidate_checked"}``."""
    keep = []
    cand = champ = 0
    for h in gate_hashes:
        in_cand = candidate_seen is not None and h in candidate_seen
        in_champ = champion_seen is not None and h in champion_seen
        cand += in_cand
        champ += in_champ
        keep.append(not (in_cand or in_champ))
    return {
        "keep": keep,
        "n": len(gate_hashes),
        "n_unseen": int(sum(keep)),
        "candidate_seen": cand,
        "champion_seen": champ,
        "candidate_checked": candidate_seen is not None,
        "champion_checked": champion_seen is not None,
    }


def decide_gate(
    gate: dict[str, Any],
    *,
    margin: float = 0.0,
    max_group_gap: float | None = None,
    on_missing_group: str = "allow",
    rule: str = "ci",
    min_utterances: int = 1,
) -> Decision:
    """Should the candidate replace the champion, on the gate set? ``gate`` is the comparison the register job
    builds (:class:`ser.jobs.release.GateJob`): ``n`` / ``n_unseen`` / ``speakers`` (the gate set, and the part
    neither model saw), ``overlap`` (:func:`unseen_gate` without ``keep``), ``group``, ``candidate`` and
    ``champion`` (each ``{"version", "uar", "ci", "group_gap"}``, champion None when there is none), and
    ``diff`` (UAR candidate − champion: ``{"diff", "low", "high"}``, the speaker-bootstrap CI), ``comparable``
    (False with ``why`` when the two models' classes differ)."""
    if rule not in ("ci", "point"):
        raise ConfigError(f"rule must be ci or point, got {rule!r}")
    ov = gate.get("overlap") or {}
    champ = gate.get("champion")
    notes = ""
    if ov.get("champion_seen"):
        notes += (
            f"the champion v{champ and champ.get('version')} was trained on {ov['champion_seen']} of the "
            f"{gate['n']} gate utterances: only the {gate['n_unseen']} neither model saw count. "
        )
    if ov.get("candidate_seen"):
        notes += f"the candidate was trained on {ov['candidate_seen']} gate utterances: left out. "
    if champ is not None and not ov.get("champion_checked", True):
        notes += f"the champion v{champ.get('version')} records no training content: overlap not checked. "
    if gate["n_unseen"] < min_utterances:
        return Decision(
            False,
            notes + f"gate set too small: {gate['n_unseen']} utterances neither model saw, fewer than "
            f"register.min_gate_utterances={min_utterances}; promote by hand after checking",
            "gate_too_small",
        )
    cand = gate["candidate"]
    group = str(gate.get("group") or "group")
    blocked, gap_note = _gap_check(cand.get("group_gap"), max_group_gap, on_missing_group, group, "on the gate set")
    notes += gap_note
    where = f"on the gate set ({gate['n_unseen']} utterances, {gate.get('speakers')} speakers)"
    if blocked is not None:
        return Decision(False, notes + blocked.reason, blocked.outcome)
    if champ is None:
        return Decision(True, notes + f"no champion yet; gate UAR {cand['uar']:.4f} {where}", "first")
    if not gate.get("comparable", True):
        return Decision(False, notes + f"not comparable: {gate.get('why')}; promote by hand", "not_comparable")
    d = gate["diff"]
    ci = f"95 % CI of the difference [{d['low']:+.4f}, {d['high']:+.4f}] (speaker bootstrap)"
    head = f"UAR {cand['uar']:.4f} vs the champion v{champ.get('version')}'s {champ['uar']:.4f} {where}: {ci}"
    if rule == "ci":
        ok = d["low"] is not None and d["low"] >= margin and d["diff"] > 0
        test = f"the CI's lower end {'reaches' if ok else 'does not reach'} the margin {margin:.4f}"
    else:
        ok = d["diff"] >= margin
        test = f"the gain {d['diff']:+.4f} {'reaches' if ok else 'does not reach'} the margin {margin:.4f}"
    return Decision(ok, notes + f"{head}; {test}", "better" if ok else "not_better")


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
