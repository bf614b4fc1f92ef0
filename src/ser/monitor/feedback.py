"""Feedback: the true label of a logged prediction, from a user, an annotator or a bulk CSV import.

A feedback record is ``{prediction_id, label, source?, group?, ts}`` (:data:`FEEDBACK_SCHEMA`): ``label`` is one of
the model's classes, ``source`` who said so (``user``, ``annotator``, ``csv``...), ``group`` an optional group the
report breaks live accuracy down by (e.g. a channel or a region; never a person's identity), ``ts`` when the
feedback arrived (UTC). Several records for one id may exist; at report time the latest wins (:func:`latest`).

**Storage.** The same hour-partitioned Parquet table as the predictions (``<log root>/feedback/``, written by
:class:`FeedbackLog` through :class:`ser.monitor.store.PartitionedWriter`), not a JSONL file: one writer, one
reader and one retention / deletion path for both tables (:func:`ser.monitor.log.purge` and
:func:`~ser.monitor.log.delete_ids` cover feedback too); each service worker writes its own files, where appending
lines to a shared JSONL file from several processes can interleave and a crash can leave half a line; and the
report reads the feedback of a window by partition, typed, with no parsing. Feedback is partitioned by its own
arrival time, which is never earlier than the prediction's, so a report reads it from the window's start on.

**Validation for the service** (``POST /v1/feedback``): :func:`validate_feedback` raises
:class:`InvalidFeedback` (answer 422: malformed id, label not among the model's classes) or
:class:`UnknownPrediction` (answer 404: a well-formed id this service never issued: not among the recently issued
ids the :class:`~ser.monitor.log.PredictionLog` remembers, nor in the log on disk, :func:`ser.monitor.log.issued`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ser.errors import SerError
from ser.monitor import store
from ser.monitor.ids import UUID7_FORM, is_valid, ts_of
from ser.monitor.log import FEEDBACK, LOG_FORMAT, RecentIds, issued, read_log, table_root

FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field("prediction_id", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        ("source", pa.string()),
        ("group", pa.string()),
        pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
    ],
    metadata={"format": LOG_FORMAT, "table": FEEDBACK},
)
MAX_TEXT = 200
"""Longest ``source`` / ``group`` kept (characters)."""


class FeedbackError(SerError):
    """Feedback the service refuses; ``status`` is the HTTP status to answer with, ``code`` the error code."""

    status = 422
    code = "invalid_feedback"


class InvalidFeedback(FeedbackError):
    """Malformed id or a label the model does not have: 422."""


class UnknownPrediction(FeedbackError):
    """A well-formed id that was never issued (or is no longer in the log): 404."""

    status = 404
    code = "unknown_prediction"


@dataclass(frozen=True)
class FeedbackRecord:
    prediction_id: str
    label: str
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    source: str | None = None
    group: str | None = None

    def to_row(self) -> dict[str, Any]:
        return {
            "prediction_id": self.prediction_id,
            "label": self.label,
            "source": self.source,
            "group": self.group,
            "ts": self.ts,
        }


def check_id(prediction_id: Any) -> str:
    """``prediction_id`` if it is a well-formed prediction id (UUIDv7 string), else :class:`InvalidFeedback`."""
    if not is_valid(prediction_id):
        text = str(prediction_id)[:64]
        if isinstance(prediction_id, str) and UUID7_FORM.match(prediction_id):
            # the UUIDv7 form, with a time no service of ours can have issued (past year 9999): unknown, not malformed
            raise UnknownPrediction(f"unknown prediction_id {text!r} (its time is past year 9999)")
        raise InvalidFeedback(f"prediction_id is not a well-formed prediction id: {text!r}")
    return str(prediction_id)


def check_label(label: Any, classes: Iterable[str]) -> str:
    """``label`` if it is one of ``classes``, else :class:`InvalidFeedback` naming them."""
    allowed = list(classes)
    if not isinstance(label, str) or label not in allowed:
        raise InvalidFeedback(f"label {str(label)[:64]!r} is not one of the model's classes: {', '.join(allowed)}")
    return label


def _text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    s = str(v).strip()
    return s[:MAX_TEXT] or None


def validate_feedback(
    prediction_id: Any,
    label: Any,
    classes: Iterable[str],
    *,
    recent: RecentIds | None = None,
    root: str | Path | None = None,
    source: str | None = None,
    group: str | None = None,
    ts: datetime | None = None,
) -> FeedbackRecord:
    """The :class:`FeedbackRecord` for a feedback request, or the error to answer with.

    Order of checks: the id's form (422), the label against ``classes`` (422), then whether the id was issued:
    in ``recent`` (the log's in-memory set of ids not yet on disk), else in the log under ``root`` (404 when in
    neither; with neither given, the issue check is skipped).
    """
    pid = check_id(prediction_id)
    lab = check_label(label, classes)
    if recent is not None or root is not None:
        known = (recent is not None and pid in recent) or (root is not None and issued(root, pid))
        if not known:
            raise UnknownPrediction(f"no prediction {pid} was issued (or it has been purged)")
    return FeedbackRecord(pid, lab, store.utc(ts) or datetime.now(UTC), _text(source), _text(group))


def _to_row(item: Any) -> dict[str, Any]:
    if isinstance(item, FeedbackRecord):
        return item.to_row()
    if isinstance(item, Mapping):
        return dict(item)
    raise TypeError(f"not a feedback record: {type(item).__name__}")


class FeedbackLog:
    """Appends feedback records to the log under ``root`` (background writer, as :class:`PredictionLog`):
    :meth:`log` never blocks or raises."""

    def __init__(self, root: str | Path, *, flush_s: float = 2.0, max_queue: int = 10_000, merge: bool = True):
        self.root = str(root)
        self._writer = store.PartitionedWriter(
            table_root(root, FEEDBACK),
            FEEDBACK_SCHEMA,
            _to_row,
            flush_s=flush_s,
            max_queue=max_queue,
            merge=merge,
            name="ser-feedback-log",
        )

    def log(self, record: FeedbackRecord) -> bool:
        return self._writer.log(record)

    def counters(self) -> dict[str, int]:
        return self._writer.counters()

    def flush(self) -> int:
        return self._writer.flush()

    def close(self, timeout: float | None = 30.0) -> None:
        self._writer.close(timeout)

    def __enter__(self) -> FeedbackLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def append_feedback(root: str | Path, records: Iterable[FeedbackRecord]) -> int:
    """Write feedback records synchronously (bulk imports); returns how many."""
    table = pa.Table.from_pylist([r.to_row() for r in records], schema=FEEDBACK_SCHEMA)
    store.append_table(table_root(root, FEEDBACK), table)
    return table.num_rows


def read_feedback(root: str | Path, since: store.TimeLike = None, until: store.TimeLike = None) -> pa.Table:
    """Feedback that arrived in ``[since, until)`` (either optional)."""
    return store.read_table(table_root(root, FEEDBACK), FEEDBACK_SCHEMA, since, until)


# ----------------------------------------------------------------------------------------------------------------
# report time


def latest(feedback: pa.Table) -> pa.Table:
    """One row per ``prediction_id``: the latest by ``ts`` (on a tie, the one stored last)."""
    if feedback.num_rows == 0:
        return feedback
    t = feedback.append_column("_order", pa.array(np.arange(feedback.num_rows)))
    t = t.sort_by([("prediction_id", "ascending"), ("ts", "descending"), ("_order", "descending")])
    ids = t["prediction_id"].to_numpy(zero_copy_only=False)
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    return t.filter(pa.array(first)).drop_columns(["_order"])


def join(predictions: pa.Table, feedback: pa.Table) -> pa.Table:
    """The predictions that have feedback, with the latest feedback's ``true_label``, ``feedback_source``,
    ``feedback_group`` and ``feedback_ts`` appended (every prediction row of an id gets it: primary and shadow)."""
    fb = latest(feedback)
    if predictions.num_rows == 0 or fb.num_rows == 0:
        idx = pa.array([], type=pa.int32())
        base = predictions.slice(0, 0)
    else:
        idx_all = pc.index_in(predictions["prediction_id"], value_set=fb["prediction_id"])
        mask = pc.is_valid(idx_all)
        base = predictions.filter(mask)
        idx = idx_all.filter(mask)
    picked = fb.take(idx) if fb.num_rows else FEEDBACK_SCHEMA.empty_table()
    return (
        base.append_column("true_label", picked["label"])
        .append_column("feedback_source", picked["source"])
        .append_column("feedback_group", picked["group"])
        .append_column("feedback_ts", picked["ts"])
    )


# ----------------------------------------------------------------------------------------------------------------
# bulk import


@dataclass
class ImportResult:
    """What :func:`import_csv` did: rows read, imported, and the rejected ones (line number, reason)."""

    read: int = 0
    imported: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "imported": self.imported,
            "rejected": len(self.rejected),
            "reasons": [{"line": n, "reason": r} for n, r in self.rejected[:50]],
        }


def _issued_labels(root: str | Path, ids: list[str]) -> dict[str, list[str]]:
    """``{prediction_id: labels of the model that answered}`` for the ids found in the prediction log."""
    if not ids:
        return {}
    times = [ts_of(i) for i in ids]
    since = store.hour_start(min(times)) - timedelta(hours=1)
    until = store.hour_start(max(times)) + timedelta(hours=2)
    t = read_log(
        root,
        since,
        until,
        columns=["prediction_id", "labels"],
        filter=ds.field("prediction_id").isin(pa.array(ids, type=pa.string())),
    )
    return dict(zip(t["prediction_id"].to_pylist(), t["labels"].to_pylist(), strict=True))


def _check_row(
    row: dict[str, Any], known: dict[str, list[str]] | None, classes: list[str] | None, now: datetime
) -> FeedbackRecord:
    pid = check_id((row.get("prediction_id") or "").strip())
    label = (row.get("label") or "").strip()
    if known is not None:
        if pid not in known:
            raise UnknownPrediction(f"no prediction {pid} in the log")
        if known[pid]:  # an answer without a label (no speech) logs no label list: only --classes can check it
            check_label(label, known[pid])
    if classes is not None:
        check_label(label, classes)
    if not label:
        raise InvalidFeedback("empty label")
    ts = store.utc(row["ts"]) if row.get("ts") else now
    assert ts is not None
    return FeedbackRecord(pid, label, ts, _text(row.get("source")) or "csv", _text(row.get("group")))


def import_csv(
    root: str | Path,
    path: str | Path,
    *,
    classes: list[str] | None = None,
    check_issued: bool = True,
    now: datetime | None = None,
) -> ImportResult:
    """Bulk labels from a CSV file with a header: ``prediction_id``, ``label``, and optionally ``source`` (default
    ``csv``), ``group``, ``ts`` (ISO 8601; default now). Each row is checked like a feedback request (well-formed
    id; with ``check_issued`` the id must be in the log and the label among the classes of the model that answered
    it; with ``classes`` the label must be one of them); good rows are written to the feedback table, bad ones
    are returned with their line number and reason."""
    p = Path(path)
    if not p.is_file():
        raise SerError(f"CSV not found: {p}")
    with open(p, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"prediction_id", "label"} - set(reader.fieldnames or [])
        if missing:
            raise SerError(f"{p}: missing column(s) {', '.join(sorted(missing))} (need prediction_id, label)")
        rows = list(reader)
    result = ImportResult(read=len(rows))
    now = store.utc(now) or datetime.now(UTC)
    known = None
    if check_issued:
        ids = sorted({i for i in ((r.get("prediction_id") or "").strip() for r in rows) if is_valid(i)})
        known = _issued_labels(root, ids)
    good = []
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            good.append(_check_row(row, known, classes, now))
        except (FeedbackError, SerError) as exc:
            result.rejected.append((n, str(exc)))
    result.imported = append_feedback(root, good) if good else 0
    return result


__all__ = [
    "FEEDBACK_SCHEMA",
    "FeedbackError",
    "FeedbackLog",
    "FeedbackRecord",
    "ImportResult",
    "InvalidFeedback",
    "UnknownPrediction",
    "append_feedback",
    "check_id",
    "check_label",
    "import_csv",
    "join",
    "latest",
    "read_feedback",
    "validate_feedback",
]


# ----------------------------------------------------------------------------------------------------------------
# feedback as training / gate data


@dataclass
class LabelledClips:
    """Feedback labels joined to audio clips: ``rows`` (``path``, ``label``, ``speaker``, ``prediction_id``,
    ``pcm_sha256``, ``group``), and what did not join (``no_audio``: labelled answers whose clip is not in the
    folder; ``unlabelled``: clips in the folder without feedback; ``duplicates``: further files of audio already
    used; ``undecodable``: files that could not be read)."""

    rows: list[dict[str, Any]]
    no_audio: int
    unlabelled: int
    undecodable: list[tuple[str, str]]
    duplicates: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "labelled_clips": len(self.rows),
            "feedback_without_audio": self.no_audio,
            "clips_without_feedback": self.unlabelled,
            "duplicate_clips": self.duplicates,
            "undecodable": len(self.undecodable),
        }


def clip_hashes(audio_dir: str | Path, workers: int = 4) -> dict[str, list[Path]]:
    """``{pcm hash: files}`` of the audio files under ``audio_dir``, hashed as the service hashes an upload:
    :func:`ser.audio.pcm_hash` of the clip decoded to 16 kHz mono (:func:`ser.audio.load_audio`). Undecodable
    files are under the key ``""`` ."""
    from concurrent.futures import ThreadPoolExecutor

    from ser import TARGET_SR
    from ser.audio import load_audio, pcm_hash
    from ser.data.ingest import AUDIO_EXTENSIONS
    from ser.errors import AudioError

    root = Path(audio_dir)
    if not root.is_dir():
        raise SerError(f"feedback audio folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)

    def one(path: Path) -> str:
        try:
            return pcm_hash(load_audio(path, TARGET_SR))
        except (AudioError, OSError):
            return ""

    out: dict[str, list[Path]] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for path, h in zip(files, pool.map(one, files), strict=True):
            out.setdefault(h, []).append(path)
    return out


def labelled_clips(root: str | Path, audio_dir: str | Path, *, workers: int = 4) -> LabelledClips:
    """The latest feedback label of every answered request (primary role) in the log under ``root``, joined through
    the prediction log's ``pcm_sha256`` to the clips the user supplies in ``audio_dir`` (the log never stores
    audio). Several answers of the same audio: the latest feedback wins. The speaker of a clip is its first
    sub-folder under ``audio_dir`` (e.g. a caller id); a clip directly in ``audio_dir`` is its own speaker."""
    fb = latest(read_feedback(root))
    preds = read_log(root, columns=["prediction_id", "role", "pcm_sha256"])
    preds = preds.filter(pc.and_(pc.equal(preds["role"], "primary"), pc.is_valid(preds["pcm_sha256"])))
    joined = join(preds, fb).to_pylist()
    by_hash: dict[str, dict[str, Any]] = {}
    for r in sorted(joined, key=lambda r: r["feedback_ts"]):
        by_hash[r["pcm_sha256"]] = r  # the latest feedback of this audio wins
    hashes = clip_hashes(audio_dir, workers)
    base = Path(audio_dir)
    rows = []
    for h, rec in sorted(by_hash.items()):
        for path in hashes.get(h, [])[:1]:  # the same audio twice in the folder: one utterance
            rel = path.relative_to(base)
            speaker = rel.parts[0] if len(rel.parts) > 1 else f"clip-{h[:12]}"
            rows.append(
                {
                    "path": str(path.resolve()),
                    "label": rec["true_label"],
                    "speaker": speaker,
                    "prediction_id": rec["prediction_id"],
                    "pcm_sha256": h,
                    "group": rec.get("feedback_group") or "",
                }
            )
    undecodable = [(str(p), "undecodable audio") for p in hashes.get("", [])]
    unlabelled = sum(len(v) for k, v in hashes.items() if k and k not in by_hash)
    duplicates = sum(len(hashes[h]) - 1 for h in by_hash if h in hashes)
    return LabelledClips(rows, sum(h not in hashes for h in by_hash), unlabelled, undecodable, duplicates)
