"""The pure core of ``ser batch``: a file's timelines → one row per voiced segment and one summary row per file
and channel, with the Arrow schemas both tables are written with.

Segments (one row per voiced segment the model classified)::

    file, channel, segment, start_s, end_s, label, confidence, p_<label> ...

Files (one row per file and channel; a file that failed has one row, ``channel`` null, ``status`` ``failed`` and
its ``reason``)::

    file, channel, status, reason, bytes, channels, sample_rate, duration_s, voiced_s, voiced_share, n_segments,
    dominant, share_<label> ..., peak_label, peak_threshold, peaks, peak_s, peak_max, peak_spans, processing_s

``file`` is the recording's path relative to the archive root (POSIX separators); ``channel`` is ``mix`` for a
downmixed timeline or the channel's name (``agent``, ``customer``; ``ch0``, ``ch1`` by default) for a per-channel
one. ``share_<label>`` is the fraction of voiced time whose segment's argmax is the label; ``peaks`` counts the
stretches where the smoothed probability of ``peak_label`` stays above ``peak_threshold`` (anger peaks by default),
``peak_s`` their total length and ``peak_spans`` their ``(start_s, end_s, max_p)``. The model version is the
Parquet partition (``model_version=<v>``, :mod:`ser.batch.store`), not a column of the files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ser.timeline import Timeline

OK = "ok"
FAILED = "failed"

_UNSAFE = re.compile(r"[^0-9A-Za-z_]+")


def label_column(prefix: str, label: str) -> str:
    """A column name for a label: ``p_angry``, ``share_angry`` (characters other than letters, digits and ``_``
    become ``_``)."""
    return f"{prefix}{_UNSAFE.sub('_', label)}"


def segment_schema(labels: Sequence[str]) -> pa.Schema:
    """Arrow schema of the segments table of a model with ``labels``."""
    return pa.schema(
        [
            ("file", pa.string()),
            ("channel", pa.string()),
            ("segment", pa.int32()),
            ("start_s", pa.float64()),
            ("end_s", pa.float64()),
            ("label", pa.string()),
            ("confidence", pa.float64()),
            *[(label_column("p_", lab), pa.float64()) for lab in labels],
        ]
    )


PEAK_SPAN = pa.struct([("start_s", pa.float64()), ("end_s", pa.float64()), ("max_p", pa.float64())])


def file_schema(labels: Sequence[str]) -> pa.Schema:
    """Arrow schema of the files (summary) table of a model with ``labels``."""
    return pa.schema(
        [
            ("file", pa.string()),
            ("channel", pa.string()),
            ("status", pa.string()),
            ("reason", pa.string()),
            ("bytes", pa.int64()),
            ("channels", pa.int32()),
            ("sample_rate", pa.int32()),
            ("duration_s", pa.float64()),
            ("voiced_s", pa.float64()),
            ("voiced_share", pa.float64()),
            ("n_segments", pa.int32()),
            ("dominant", pa.string()),
            *[(label_column("share_", lab), pa.float64()) for lab in labels],
            ("peak_label", pa.string()),
            ("peak_threshold", pa.float64()),
            ("peaks", pa.int32()),
            ("peak_s", pa.float64()),
            ("peak_max", pa.float64()),
            ("peak_spans", pa.list_(PEAK_SPAN)),
            ("processing_s", pa.float64()),
        ]
    )


@dataclass(frozen=True)
class FileInfo:
    """Facts about one recording for its rows: ``bytes`` on storage, ``channels`` and ``sample_rate`` of its
    header (None when it could not be read)."""

    file: str
    bytes: int | None = None
    channels: int | None = None
    sample_rate: int | None = None


def segment_rows(file: str, channel: str, tl: Timeline) -> list[dict[str, Any]]:
    """One row per segment of ``tl`` (:func:`segment_schema` columns)."""
    rows = []
    for i, ((start, end), p) in enumerate(zip(tl.segments, tl.probs, strict=True)):
        k = int(np.argmax(p))
        row: dict[str, Any] = {
            "file": file,
            "channel": channel,
            "segment": i,
            "start_s": float(start),
            "end_s": float(end),
            "label": tl.labels[k],
            "confidence": float(p[k]),
        }
        row.update({label_column("p_", lab): float(v) for lab, v in zip(tl.labels, p, strict=True)})
        rows.append(row)
    return rows


def summary_row(info: FileInfo, channel: str, tl: Timeline, processing_s: float) -> dict[str, Any]:
    """The summary row of one channel's timeline (:func:`file_schema` columns), ``status`` ok."""
    s = tl.summary
    spans = [{"start_s": pk.start_s, "end_s": pk.end_s, "max_p": pk.max_p} for pk in s.peaks]
    row: dict[str, Any] = {
        "file": info.file,
        "channel": channel,
        "status": OK,
        "reason": None,
        "bytes": info.bytes,
        "channels": info.channels,
        "sample_rate": info.sample_rate,
        "duration_s": s.duration_s,
        "voiced_s": s.voiced_s,
        "voiced_share": s.voiced_fraction,
        "n_segments": len(tl.segments),
        "dominant": s.dominant,
    }
    row.update({label_column("share_", lab): s.shares[lab] for lab in tl.labels})
    row.update(
        {
            "peak_label": s.peak_label,
            "peak_threshold": s.peak_threshold,
            "peaks": len(s.peaks),
            "peak_s": float(sum(pk.end_s - pk.start_s for pk in s.peaks)),
            "peak_max": max((pk.max_p for pk in s.peaks), default=None),
            "peak_spans": spans,
            "processing_s": processing_s,
        }
    )
    return row


def failed_row(info: FileInfo, reason: str, processing_s: float = 0.0) -> dict[str, Any]:
    """The one summary row of a file that could not be analysed: ``status`` failed, ``reason``, nulls."""
    return {
        "file": info.file,
        "channel": None,
        "status": FAILED,
        "reason": reason,
        "bytes": info.bytes,
        "channels": info.channels,
        "sample_rate": info.sample_rate,
        "processing_s": processing_s,
    }


@dataclass
class FileResult:
    """What a worker returns for one file: its segment rows and summary rows (one per channel, or one failed row);
    ``audio_s`` the seconds of audio it analysed (0 for a failed file)."""

    file: str
    segments: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    audio_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r["status"] == OK for r in self.summaries)

    @property
    def reason(self) -> str | None:
        return next((r["reason"] for r in self.summaries if r["status"] != OK), None)


def file_result(info: FileInfo, timelines: Sequence[tuple[str, Timeline]], processing_s: float) -> FileResult:
    """A file's :class:`FileResult` from its ``(channel, timeline)`` pairs (one ``mix`` pair, or one per channel)."""
    res = FileResult(info.file)
    for channel, tl in timelines:
        res.segments.extend(segment_rows(info.file, channel, tl))
        res.summaries.append(summary_row(info, channel, tl, processing_s))
    res.audio_s = max((tl.duration_s for _, tl in timelines), default=0.0)
    return res


def to_table(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows → an Arrow table of exactly ``schema`` (columns a row lacks are null)."""
    return pa.Table.from_pylist([{name: r.get(name) for name in schema.names} for r in rows], schema=schema)
