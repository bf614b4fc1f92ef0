"""Helpers of the monitoring tests: synthetic input statistics and records, a metadata-only model folder."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np

from ser.monitor.stats import InputStats

LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


def fake_stats(rng: np.random.Generator, n_mels: int = 8, shift: float = 0.0, **fixed) -> InputStats:
    """Random but plausible statistics of one clip; ``shift`` moves the levels and bands by that many dB."""
    values = {
        "rms_dbfs": -30.0 + 4 * rng.standard_normal() + shift,
        "peak_dbfs": -10.0 + 3 * rng.standard_normal() + shift,
        "clipped_fraction": 0.0,
        "speech_fraction": float(np.clip(0.5 + 0.15 * rng.standard_normal(), 0, 1)),
        "snr_db": 40.0 + 8 * rng.standard_normal(),
        "high_band_share": float(np.clip(0.03 + 0.01 * rng.standard_normal(), 0.005, 1)),
        "mel_mean": (-60.0 + shift + 5 * rng.standard_normal(n_mels)).astype(np.float32),
        "mel_std": (12.0 + rng.standard_normal(n_mels)).astype(np.float32),
        "native_sr": 16000,
        "channels": 1,
        "container": "WAV",
        "codec": "PCM_16",
    }
    values.update(fixed)
    return InputStats(**values)


def fake_probs(rng: np.random.Generator, k: int = len(LABELS)) -> np.ndarray:
    """A probability vector whose arg-max is uniform over the classes and whose top value is in [0.3, 0.9]."""
    top = rng.uniform(0.3, 0.9)
    p = np.full(k, (1 - top) / (k - 1))
    p[rng.integers(k)] = top
    return p


def fake_record(rng: np.random.Generator, *, ts: datetime | None = None, version: str = "1", **kw):
    from ser.monitor.ids import new_id
    from ser.monitor.log import build_record

    stats = kw.pop("stats", None) or fake_stats(rng)
    pid = kw.pop("prediction_id", None) or (new_id(int(ts.timestamp() * 1000)) if ts is not None else None)
    return build_record(
        route="/v1/predict",
        model_name="ser-emotion",
        model_version=version,
        labels=LABELS,
        probabilities=kw.pop("probabilities", None) if "probabilities" in kw else fake_probs(rng),
        duration_s=kw.pop("duration_s", float(rng.uniform(2, 5))),
        processing_ms=4.0,
        stats=stats,
        pcm_sha256="0" * 64,
        prediction_id=pid,
        **kw,
    )


def model_folder(path: Path, *, version: str = "1", cv_uar: float | None = 0.6, labels=None) -> Path:
    """A metadata-only model folder (what the report and the reference job read; no ONNX graph needed)."""
    from ser.features import FeatureConfig
    from ser.model_folder import FORMAT, METADATA_FILE

    path.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "name": "ser-emotion",
        "version": version,
        "labels": labels or LABELS,
        "sample_rate": 16000,
        "input": {"kind": "logmel", "feature_config": FeatureConfig().model_dump(mode="json"), "trim_db": 40.0},
        "eval": {"mode": "full"},
        "evaluation": {"uar": cv_uar},
    }
    (path / METADATA_FILE).write_text(json.dumps(meta))
    return path


def write_reference(model_dir: Path, rng: np.random.Generator, n: int = 400, n_mels: int = 8, **stats_kw) -> None:
    from ser.monitor.reference import build_reference
    from ser.monitor.reference import write_reference as write

    stats = [fake_stats(rng, n_mels, **stats_kw) for _ in range(n)]
    probs = [fake_probs(rng) for _ in range(n)]
    labels = [LABELS[int(np.argmax(p))] for p in probs]
    write(
        model_dir,
        build_reference(
            stats,
            rng.uniform(2, 5, n).tolist(),
            labels=labels,
            confidences=[float(p.max()) for p in probs],
            true_labels=labels,
        ),
    )


def feedback_for_clips(clips_dir: Path, log_root: Path, *, skip: int = 0, wrong_first: bool = False) -> list[str]:
    """A prediction log and feedback log under ``log_root`` for the RAVDESS-named clips under ``clips_dir`` (the
    synthetic corpus): one answered request per clip (its 16 kHz PCM hash, as the service logs it) and feedback
    with the clip's true emotion; the first ``skip`` clips get no feedback. ``wrong_first``: the first clip gets a
    wrong label first and the right one later (the latest wins). Returns the prediction ids."""
    import dataclasses
    from datetime import UTC, datetime, timedelta

    from ser.audio import load_audio, pcm_hash
    from ser.data.synth import EMOTION_CODES
    from ser.monitor.feedback import FeedbackRecord, append_feedback
    from ser.monitor.log import append_records

    by_code = {v: k for k, v in EMOTION_CODES.items()}
    rng = np.random.default_rng(0)
    t0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    records, feedback, ids = [], [], []
    for i, clip in enumerate(sorted(clips_dir.rglob("*.wav"))):
        rec = fake_record(rng, ts=t0 + timedelta(seconds=i))
        rec = dataclasses.replace(rec, pcm_sha256=pcm_hash(load_audio(clip)))
        records.append(rec)
        ids.append(rec.prediction_id)
        if i < skip:
            continue
        label = by_code[clip.name.split("-")[2]]
        ts = t0 + timedelta(minutes=5, seconds=i)
        if wrong_first and i == skip:
            feedback.append(FeedbackRecord(rec.prediction_id, "calm" if label != "calm" else "sad", ts=ts))
            ts = ts + timedelta(seconds=1)
        feedback.append(FeedbackRecord(rec.prediction_id, label, ts=ts, source="annotator"))
    append_records(log_root, records)
    append_feedback(log_root, feedback)
    return ids
