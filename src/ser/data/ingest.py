"""Corpus adapters and ingest: a folder of audio → a manifest table (+ a quarantine table).

Each adapter turns one file path into a row of native facts (speaker, native label, text id, intensity, ...) or
raises :class:`Reject` with a reason; ingest then probes and hashes every accepted file in a thread pool. A file
that does not decode, or whose name the adapter does not understand, is quarantined with its reason; the rest of
the corpus is ingested. Signal checks (NaN, silence, clipping) belong to :mod:`ser.data.validate`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ser.audio import probe, sha256_file
from ser.data import schema
from ser.data.labels import LabelProfile, apply_profile
from ser.errors import AudioError, SerError
from ser.io import write_parquet
from ser.progress import track

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".caf", ".w64", ".opus"}
SYNTH_MARKER = "SYNTHETIC_CORPUS.json"


class Reject(Exception):
    """The adapter does not accept this file; the message is the quarantine reason."""


@dataclass
class IngestResult:
    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    synthetic: bool = False
    corpus: str = ""


# --------------------------------------------------------------------------------------------------------------
# label tables

RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
EMODB_EMOTIONS = {
    "W": "angry",
    "L": "boredom",
    "E": "disgust",
    "A": "fearful",
    "F": "happy",
    "T": "sad",
    "N": "neutral",
}
EMODB_MALE = {"03", "10", "11", "12", "15"}
EMODB_FEMALE = {"08", "09", "13", "14", "16"}
CREMAD_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
CREMAD_LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
SAVEE_EMOTIONS = {
    "a": "angry",
    "d": "disgust",
    "f": "fearful",
    "h": "happy",
    "n": "neutral",
    "sa": "sad",
    "su": "surprised",
}
SYNONYMS = {
    **{k: "neutral" for k in ("neutral", "neu", "n")},
    **{k: "calm" for k in ("calm",)},
    **{k: "happy" for k in ("happy", "happiness", "joy", "hap", "h")},
    **{k: "sad" for k in ("sad", "sadness", "sa")},
    **{k: "angry" for k in ("angry", "anger", "ang", "a", "mad")},
    **{k: "fearful" for k in ("fear", "fearful", "fea", "f", "afraid")},
    **{k: "disgust" for k in ("disgust", "disgusted", "dis", "d")},
    **{k: "surprised" for k in ("surprise", "surprised", "ps", "pleasant_surprise", "pleasant_surprised", "sur", "su")},
    **{k: "boredom" for k in ("boredom", "bored", "bor")},
}


def unify(label: str) -> str | None:
    """A unified emotion for a free-form label, or None when no mapping covers it."""
    return SYNONYMS.get(str(label).strip().lower().replace(" ", "_").replace("-", "_"))


# --------------------------------------------------------------------------------------------------------------
# adapters: (path, root) → dict of native facts


def _ravdess(path: Path, root: Path) -> dict:
    parts = path.stem.split("-")
    if len(parts) != 7 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise Reject("unknown file-name pattern for RAVDESS (MM-VV-EE-II-SS-RR-AA)")
    modality, channel, emo, intensity, statement, _rep, actor = parts
    if modality != "03" or channel != "01":
        raise Reject(f"not audio-only speech (modality {modality}, vocal channel {channel})")
    if emo not in RAVDESS_EMOTIONS:
        raise Reject(f"unknown RAVDESS emotion code {emo}")
    return dict(
        speaker=actor,
        gender="male" if int(actor) % 2 else "female",
        native_label=emo,
        emotion=RAVDESS_EMOTIONS[emo],
        text_id=statement,
        intensity={"01": "normal", "02": "strong"}.get(intensity, ""),
    )


def _emodb(path: Path, root: Path) -> dict:
    m = re.fullmatch(r"(\d\d)([ab]\d\d)([WLEAFTN])([a-z])", path.stem)
    if not m:
        raise Reject("unknown file-name pattern for EmoDB (SSTTTEV)")
    spk, text, letter, _ = m.groups()
    gender = "male" if spk in EMODB_MALE else "female" if spk in EMODB_FEMALE else "unknown"
    return dict(speaker=spk, gender=gender, native_label=letter, emotion=EMODB_EMOTIONS[letter], text_id=text)


def _cremad(path: Path, root: Path) -> dict:
    m = re.fullmatch(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})", path.stem)
    if not m or m.group(3) not in CREMAD_EMOTIONS:
        raise Reject("unknown file-name pattern for CREMA-D (AAAA_SSS_EEE_LL)")
    actor, sentence, emo, level = m.groups()
    return dict(
        speaker=actor,
        native_label=emo,
        emotion=CREMAD_EMOTIONS[emo],
        text_id=sentence,
        intensity=CREMAD_LEVELS.get(level, ""),
    )


def _tess(path: Path, root: Path) -> dict:
    parts = path.stem.split("_")
    if len(parts) < 3:
        raise Reject("unknown file-name pattern for TESS (<speaker>_<word>_<emotion>)")
    spk = parts[0].upper()
    spk = {"OA": "OAF", "YA": "YAF"}.get(spk, spk)
    if spk not in ("OAF", "YAF"):
        raise Reject(f"unknown TESS speaker {parts[0]!r}")
    native = "_".join(parts[2:]).lower()
    return dict(speaker=spk, gender="female", native_label=native, emotion=unify(native), text_id=parts[1].lower())


def _savee(path: Path, root: Path) -> dict:
    m = re.fullmatch(r"(?:(DC|JE|JK|KL)_)?(sa|su|a|d|f|h|n)(\d\d)", path.stem)
    spk = m and (m.group(1) or (path.parent.name if path.parent.name in ("DC", "JE", "JK", "KL") else None))
    if not m or not spk:
        raise Reject("unknown file-name pattern for SAVEE (<speaker>_<code><nn> or AudioData/<speaker>/<code><nn>)")
    code = m.group(2)
    return dict(
        speaker=spk, gender="male", native_label=code, emotion=SAVEE_EMOTIONS[code], text_id=f"{code}{m.group(3)}"
    )


def _folder(path: Path, root: Path) -> dict:
    rel = path.relative_to(root)
    if len(rel.parts) < 2:
        raise Reject("file is not inside a label sub-folder")
    label = rel.parts[0]
    return dict(speaker="unknown", native_label=label, emotion=unify(label))


ADAPTERS: dict[str, Callable[[Path, Path], dict]] = {
    "ravdess": _ravdess,
    "emodb": _emodb,
    "cremad": _cremad,
    "tess": _tess,
    "savee": _savee,
    "folder": _folder,
}
CORPORA = (*ADAPTERS, "csv", "synthetic")


# --------------------------------------------------------------------------------------------------------------
# ingest


def _list_audio(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def _csv_rows(csv_path: Path) -> list[tuple[Path, dict]]:
    df = pd.read_csv(csv_path, dtype=str).fillna("")
    missing = {"path", "label"} - set(df.columns)
    if missing:
        raise SerError(f"{csv_path}: csv manifest lacks column(s) {', '.join(sorted(missing))}")
    rows = []
    for rec in df.to_dict("records"):
        p = Path(rec["path"])
        p = p if p.is_absolute() else (csv_path.parent / p)
        gender = rec.get("gender", "").lower()
        rows.append(
            (
                p,
                dict(
                    speaker=rec.get("speaker") or "unknown",
                    gender=gender if gender in schema.GENDERS else "unknown",
                    native_label=rec["label"],
                    emotion=unify(rec["label"]),
                    split=rec.get("split", ""),
                ),
            )
        )
    return rows


def _demographics(root: Path, given: Path | None) -> pd.DataFrame | None:
    path = given or next(
        (p for p in (root / "VideoDemographics.csv", root.parent / "VideoDemographics.csv") if p.is_file()), None
    )
    if path is None:
        return None
    if not Path(path).is_file():
        raise SerError(f"demographics file not found: {path}")
    d = pd.read_csv(path)
    return d.assign(ActorID=d["ActorID"].astype(str)).set_index("ActorID")


def _probe_one(path: Path) -> dict:
    info = probe(path)
    if info.frames == 0:
        raise AudioError("no audio samples (empty stream)")
    return dict(
        duration_s=info.duration_s, sample_rate=info.sample_rate, channels=info.channels, sha256=sha256_file(path)
    )


def ingest(
    corpus: str,
    root: str | Path,
    *,
    profile: str | LabelProfile = "unified",
    demographics: str | Path | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> IngestResult:
    """Build the manifest of ``corpus`` under ``root`` (a folder; for ``csv``, the csv file)."""
    root = Path(root)
    if corpus not in CORPORA:
        raise SerError(f"unknown corpus {corpus!r}; known: {', '.join(CORPORA)}")
    if not root.exists():
        raise SerError(f"corpus path not found: {root}")
    synthetic = corpus == "synthetic" or (root.is_dir() and (root / SYNTH_MARKER).is_file())
    name = "synthetic" if synthetic else corpus
    if synthetic and (root / SYNTH_MARKER).is_file():
        name = json.loads((root / SYNTH_MARKER).read_text()).get("corpus", "synthetic")
    quarantine: list[dict] = []
    candidates: list[tuple[Path, dict]] = []
    if corpus == "csv":
        candidates = _csv_rows(root)
        base = root.parent
    else:
        if not root.is_dir():
            raise SerError(f"corpus path is not a folder: {root}")
        adapter = ADAPTERS["ravdess" if corpus == "synthetic" else corpus]
        base = root
        for path in _list_audio(root):
            try:
                candidates.append((path, adapter(path, root)))
            except Reject as exc:
                quarantine.append({"path": str(path), "stage": "ingest", "reason": str(exc)})
    demo = (
        _demographics(root if root.is_dir() else root.parent, Path(demographics) if demographics else None)
        if corpus == "cremad"
        else None
    )
    unmapped = Counter(str(facts["native_label"]) for _, facts in candidates if not facts.get("emotion"))
    candidates = [(p, f) for p, f in candidates if f.get("emotion")]

    def job(item):
        path, facts = item
        try:
            return path, facts, _probe_one(path), None
        except (AudioError, OSError) as exc:
            return path, facts, None, str(exc)

    rows = []
    with ThreadPoolExecutor(max_workers=workers or 4) as pool:
        for path, facts, measured, err in track(pool.map(job, candidates), "ingest", len(candidates), progress):
            if err is not None:
                quarantine.append({"path": str(path), "stage": "ingest", "reason": err})
                continue
            try:
                rel = path.resolve().relative_to(base.resolve()).with_suffix("")
            except ValueError:
                rel = path.with_suffix("")
            row = {
                **facts,
                **measured,
                "utt_id": f"{name}:{rel.as_posix()}",
                "path": str(path.resolve()),
                "corpus": name,
            }
            row["speaker"] = f"{name}:{facts['speaker']}"
            if demo is not None and facts["speaker"] in demo.index:
                d = demo.loc[facts["speaker"]]
                row.update(
                    age=float(d["Age"]),
                    race=str(d["Race"]),
                    ethnicity=str(d["Ethnicity"]),
                    gender=str(d["Sex"]).lower() if str(d["Sex"]).lower() in schema.GENDERS else "unknown",
                )
            row.setdefault("gender", "unknown")
            rows.append(row)
    manifest = schema.conform(pd.DataFrame(rows)) if rows else schema.empty()
    manifest, dropped = apply_profile(manifest, profile)
    dropped = {**{f"unmapped:{k}": v for k, v in sorted(unmapped.items())}, **dropped}
    manifest = schema.conform(manifest.sort_values("utt_id"))
    return IngestResult(manifest, schema.quarantine_frame(quarantine), dropped, synthetic, name)


def summarize(result: IngestResult | pd.DataFrame) -> dict:
    """Files, speakers, per-label counts, speakers per gender, total hours (+ quarantine and drops)."""
    m = result.manifest if isinstance(result, IngestResult) else result
    spk_gender = m.groupby("speaker")["gender"].first().value_counts()
    out = {
        "corpora": sorted(m["corpus"].unique().tolist()),
        "files": len(m),
        "speakers": int(m["speaker"].nunique()),
        "labels": {k: int(v) for k, v in m["emotion"].value_counts().sort_index().items()},
        "speakers_by_gender": {k: int(v) for k, v in spk_gender.items()},
        "total_hours": round(float(m["duration_s"].sum()) / 3600, 4),
    }
    if isinstance(result, IngestResult):
        out.update(quarantined=len(result.quarantine), dropped=result.dropped, synthetic=result.synthetic)
    return out


def write_outputs(result: IngestResult, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    write_parquet(out_dir / "manifest.parquet", result.manifest)
    write_parquet(out_dir / "quarantine.parquet", result.quarantine)


def combine_sources(manifests: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One manifest of several sources' manifests (``{source name: manifest}``, in order), with a ``source``
    column. With two or more sources, ``utt_id`` and ``speaker`` are prefixed ``<source>/`` so that two sources
    never share an id (two ``folder`` corpora, the same corpus twice); a single source keeps its ids."""
    parts = []
    for name, m in manifests.items():
        m = m.copy()
        if len(manifests) > 1:
            m["utt_id"] = f"{name}/" + m["utt_id"].astype(str)
            m["speaker"] = f"{name}/" + m["speaker"].astype(str)
        m["source"] = name
        parts.append(m)
    if not parts:
        return schema.empty()
    return schema.conform(pd.concat(parts, ignore_index=True))
