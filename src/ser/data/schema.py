"""The manifest table: one row per utterance, the contract between every stage.

Columns (``MANIFEST_COLUMNS``), in order:

========== ======= ==============================================================================
column     dtype   meaning
========== ======= ==============================================================================
utt_id     str     unique id, ``<corpus>:<path relative to the corpus root, no extension>``
path       str     absolute path of the audio file
corpus     str     corpus name (``ravdess``, ``emodb``, ...)
speaker    str     speaker id unique across corpora, ``<corpus>:<native id>`` (e.g. ``ravdess:12``)
gender     str     ``male`` | ``female`` | ``unknown``
native_label str   the corpus' own label (e.g. ``W`` for EmoDB anger, ``05`` for RAVDESS angry)
emotion    str     unified emotion (see :mod:`ser.data.labels`), after the label profile
text_id    str     sentence / text id, ``""`` when unknown
intensity  str     ``normal``/``strong`` (RAVDESS), ``low``/``medium``/``high``/``unspecified`` (CREMA-D), ``""``
duration_s float   duration in seconds at the native rate
sample_rate int    native sample rate (Hz)
channels   int     native channel count
sha256     str     SHA-256 of the file bytes
age        float   speaker age in years, NaN when unknown
race       str     speaker race when the corpus gives it, ``""`` otherwise
ethnicity  str     speaker ethnicity when the corpus gives it, ``""`` otherwise
split      str     a split the user's csv manifest fixed (``train``/``val``/``test``), ``""`` otherwise
========== ======= ==============================================================================

The quarantine table (``QUARANTINE_COLUMNS``) holds ``path``, ``stage`` (``ingest``/``validate``) and ``reason``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ser.errors import ManifestError

MANIFEST_COLUMNS: dict[str, str] = {
    "utt_id": "string",
    "path": "string",
    "corpus": "string",
    "speaker": "string",
    "gender": "string",
    "native_label": "string",
    "emotion": "string",
    "text_id": "string",
    "intensity": "string",
    "duration_s": "float64",
    "sample_rate": "int64",
    "channels": "int64",
    "sha256": "string",
    "age": "float64",
    "race": "string",
    "ethnicity": "string",
    "split": "string",
}

QUARANTINE_COLUMNS: dict[str, str] = {"path": "string", "stage": "string", "reason": "string"}

GENDERS = ("male", "female", "unknown")

_DEFAULTS = {"string": "", "float64": np.nan, "int64": 0}


def conform(df: pd.DataFrame, columns: dict[str, str] = MANIFEST_COLUMNS) -> pd.DataFrame:
    """Return ``df`` with exactly ``columns`` in order and with their dtypes; missing optional ones are filled.

    Extra columns (e.g. validation measurements) are kept after the schema's.
    """
    out = df.copy()
    for col, dtype in columns.items():
        if col not in out.columns:
            out[col] = _DEFAULTS[dtype]
        if dtype == "string":
            out[col] = out[col].fillna("").astype(str).astype("string")
        else:
            out[col] = out[col].astype(dtype)
    extra = [c for c in out.columns if c not in columns]
    return out[list(columns) + extra].reset_index(drop=True)


def empty(columns: dict[str, str] = MANIFEST_COLUMNS) -> pd.DataFrame:
    return conform(pd.DataFrame({c: [] for c in columns}), columns)


REQUIRED = ("utt_id", "path", "corpus", "speaker", "emotion")


def check(df: pd.DataFrame) -> None:
    """Raise :class:`ManifestError` naming the first schema violation."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest lacks column(s): {', '.join(missing)}")
    for col in REQUIRED:
        blank = df[col].isna() | (df[col].astype(str) == "")
        if blank.any():
            raise ManifestError(f"column {col!r} is empty in {int(blank.sum())} row(s)")
    dup = df["utt_id"].duplicated()
    if dup.any():
        raise ManifestError(f"utt_id is not unique: {df.loc[dup, 'utt_id'].iloc[0]!r} repeats")
    bad_gender = ~df["gender"].isin(GENDERS)
    if bad_gender.any():
        raise ManifestError(f"gender must be one of {GENDERS}, got {df.loc[bad_gender, 'gender'].iloc[0]!r}")


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest Parquet file and check its schema."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from exc
    check(df)
    return conform(df)


def quarantine_frame(rows: list[dict]) -> pd.DataFrame:
    """Build a quarantine table from ``{"path", "stage", "reason"}`` dicts."""
    return conform(pd.DataFrame(rows, columns=list(QUARANTINE_COLUMNS)), QUARANTINE_COLUMNS)
