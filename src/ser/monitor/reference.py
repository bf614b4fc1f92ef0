"""The training reference profile: what the model's inputs and answers looked like on its own corpus.

Export writes it into the model folder as ``reference.parquet`` (:data:`ser.model_folder.REFERENCE_FILE`, an
optional file of format ``ser-model/2``); the monitoring report compares a window of the prediction log with it.
One row per sampled training clip (at most :data:`MAX_CLIPS`, a seeded random sample of the corpus):

- ``duration_s`` and the input statistics of :mod:`ser.monitor.stats`, computed exactly as the service computes
  them for the log (decoded 16 kHz mono audio; the log-mel bands of the model's own input, after its silence trim),
  with the file facts (``native_sr``, ``channels``, ``container``, ``codec``) read from each file's header;
- ``label`` and ``confidence``: the clip's **out-of-fold** prediction from the speaker-independent
  cross-validation (the model of the fold that did not train on the clip's speaker), null when the clip was in no
  test fold. Out-of-fold answers stand for what the model does on unseen speakers, as it will live; the shipped
  model's answers on its own training clips would be over-confident;
- ``true_label``: the corpus label (the report shows the label mix beside it).

The table's schema metadata holds ``format`` (:data:`REFERENCE_FORMAT`) and ``meta`` (JSON: clips in the corpus,
clips sampled, seed, where the predictions came from, when it was built). :func:`load_reference` returns None for
folders exported before the reference existed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ser.errors import SerError
from ser.monitor.log import PREDICTION_SCHEMA
from ser.monitor.stats import BAND_FIELDS, CATEGORICAL_FIELDS, SCALAR_FIELDS, InputStats

REFERENCE_FORMAT = "ser-reference/1"
MAX_CLIPS = 2000
"""Largest number of clips profiled (a seeded random sample beyond it)."""

_STAT_NAMES = [*CATEGORICAL_FIELDS, *SCALAR_FIELDS, *BAND_FIELDS]
REFERENCE_SCHEMA = pa.schema(
    [
        ("duration_s", pa.float64()),
        *[PREDICTION_SCHEMA.field(name) for name in _STAT_NAMES],
        ("label", pa.string()),
        ("confidence", pa.float64()),
        ("true_label", pa.string()),
    ]
)
"""Columns of ``reference.parquet``: the statistics columns carry the prediction log's names and types."""


def sample_indices(n: int, max_clips: int = MAX_CLIPS, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded random sample of ``min(n, max_clips)`` of ``n`` clips (all when ``n`` fits)."""
    if n <= max_clips:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_clips, replace=False))


def build_reference(
    stats: Sequence[InputStats],
    durations: Sequence[float],
    *,
    labels: Sequence[str | None] | None = None,
    confidences: Sequence[float | None] | None = None,
    true_labels: Sequence[str | None] | None = None,
    meta: dict[str, Any] | None = None,
) -> pa.Table:
    """The reference table of ``n`` clips: ``stats`` and ``durations`` (s) ``(n,)``; ``labels`` / ``confidences``:
    the out-of-fold predicted label and its probability (None where a clip has none); ``true_labels``: the corpus
    labels. ``meta`` is stored as JSON in the schema metadata."""
    n = len(stats)
    for name, seq in (("durations", durations), ("labels", labels), ("confidences", confidences)):
        if seq is not None and len(seq) != n:
            raise SerError(f"reference: {len(seq)} {name} for {n} clips")
    if true_labels is not None and len(true_labels) != n:
        raise SerError(f"reference: {len(true_labels)} true labels for {n} clips")
    rows = []
    for i, s in enumerate(stats):
        d = s.to_dict()
        row = {name: d[name] for name in _STAT_NAMES}
        row["duration_s"] = float(durations[i])
        row["label"] = None if labels is None else labels[i]
        row["confidence"] = None if confidences is None or confidences[i] is None else float(confidences[i])  # type: ignore[arg-type]
        row["true_label"] = None if true_labels is None else true_labels[i]
        rows.append(row)
    info = {"format": REFERENCE_FORMAT, "created": datetime.now(UTC).isoformat(timespec="seconds"), **(meta or {})}
    schema = REFERENCE_SCHEMA.with_metadata({"format": REFERENCE_FORMAT, "meta": json.dumps(info)})
    return pa.Table.from_pylist(rows, schema=schema)


def write_reference(model_dir: str | Path, table: pa.Table) -> Path:
    """Write ``table`` as the model folder's ``reference.parquet`` (atomically)."""
    from ser.io import atomic_path
    from ser.model_folder import REFERENCE_FILE

    path = Path(model_dir) / REFERENCE_FILE
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


@dataclass(frozen=True)
class Reference:
    """A loaded reference profile: the table and its ``meta``."""

    table: pa.Table
    meta: dict[str, Any]

    @property
    def n(self) -> int:
        return self.table.num_rows

    def column(self, name: str) -> np.ndarray:
        """A scalar column as float64 ``(n,)`` (null → NaN) or, for text columns, object ``(n,)``."""
        col = self.table[name]
        if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
            return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
        return np.asarray(col.to_pylist(), dtype=object)

    def bands(self, name: str) -> np.ndarray:
        """A per-band column as float64 ``(n, n_mels)`` (rows of another length, or null, are NaN)."""
        return list_matrix(self.table[name])

    @property
    def n_mels(self) -> int:
        return self.bands("mel_mean").shape[1]


def list_matrix(col: pa.ChunkedArray | pa.Array, width: int | None = None) -> np.ndarray:
    """A list<float> column as float64 ``(n, width)``; ``width`` default: the most common row length. Rows of
    another length (another model's features) or null rows are NaN."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    lengths = np.asarray(arr.value_lengths().fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    if width is None:
        width = int(np.bincount(lengths).argmax()) if n and lengths.max() > 0 else 0
    out = np.full((n, width), np.nan)
    if n == 0 or width == 0:
        return out
    ok = lengths == width
    if ok.all() and arr.null_count == 0 and arr.offset == 0:
        return np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float64).reshape(n, width)
    sub = arr.filter(pa.array(ok))
    out[ok] = np.asarray(sub.flatten().to_numpy(zero_copy_only=False), dtype=np.float64).reshape(-1, width)
    return out


def load_reference(model_dir: str | Path) -> Reference | None:
    """The reference of a model folder, or None when it has none (folders exported before it existed)."""
    from ser.model_folder import REFERENCE_FILE

    path = Path(model_dir) / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise SerError(f"{path}: not a readable reference ({exc})") from None
    raw = (table.schema.metadata or {}).get(b"meta", b"{}")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        meta = {}
    missing = [f.name for f in REFERENCE_SCHEMA if f.name not in table.column_names]
    if missing:
        raise SerError(f"{path}: missing column(s) {', '.join(missing)}")
    return Reference(table, meta)


def file_stats(path: str | Path, pre: Any) -> tuple[InputStats, float]:
    """``(input statistics, duration_s)`` of one corpus file as the service would see it: decoded to the model's
    rate, mono; log-mel bands from the model's own input (``pre``: its :class:`~ser.model_folder.Preprocessing`)."""
    from ser.audio import load_audio, probe
    from ser.monitor.stats import input_stats, seen_logmel

    info = probe(path)
    audio = load_audio(path, pre.sample_rate)
    feats = pre.features(audio)
    n_mels = int(pre.feature_config.get("n_mels", 64))
    lm = seen_logmel(feats, pre.kind, n_mels)
    st = input_stats(
        audio,
        pre.sample_rate,
        logmel=lm,
        native_sr=info.sample_rate,
        channels=info.channels,
        container=info.format,
        codec=info.subtype,
    )
    return st, audio.size / pre.sample_rate
