"""Monitoring: how long the report takes on a large log, and how small a degradation it catches.

Usage: ``.venv/bin/python benchmarks/monitor.py [--rows 1000000] [--reps 5] [--quick]``.

1. **Report time.** A synthetic log of ``--rows`` predictions over 24 hours (every column filled, 64 log-mel bands)
   is written with the log's own writer code, then ``monitor_report`` runs over the whole window (every row, every
   statistic, every band), without and with the HTML page. Also timed: ``PredictionLog.log`` on the request path,
   the writer's throughput, and ``input_stats`` of a 3 s clip (what the service adds per request).
2. **Detection power.** Input statistics of real RAVDESS clips (all 24 actors, every 10th file) clean (the
   reference) and under each degradation: telephone, held-out factory noise at 50 … 0 dB SNR, level drops of
   1 … 30 dB (the issue asked for 30 … 0 dB and 5 … 30 dB; milder steps find where detection stops). Live windows
   of 200, 1,000 and 5,000 predictions are bootstrapped from each condition's clips (``--reps`` replicates) and
   compared with the reference as the report does; a condition counts as detected at a window size when at least
   80 % of the replicates are flagged on data drift or input quality. Clean windows give the false-alarm rate;
   clean windows of 12 actors against a reference of the other 12 show what a change of speakers does.

Writes ``benchmarks/results/monitor.json`` and the matching section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from _common import RESULTS_DIR, SHARED, machine, replace_section

RAVDESS = Path(os.environ.get("SER_RAVDESS", SHARED / "ravdess"))
NOISES = SHARED / "noise"
RESULTS_JSON = RESULTS_DIR / "monitor.json"
LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
N_MELS = 64
T0 = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
SNRS = (50, 40, 30, 20, 15, 10, 5, 0)
LEVELS = (1, 2, 3, 5, 10, 15, 20, 30)
WINDOWS = (200, 1000, 5000)
SERVICE_LATENCY_TODO = (
    "measured elsewhere: p50/p95 latency of POST /v1/predict and stream capacity with the prediction log on vs off "
    "are in benchmarks/results/monitor_serve.json (benchmarks/monitor_serve.py and benchmarks/serve.py)"
)


# ----------------------------------------------------------------------------------------------------------------
# 1. report time on a large synthetic log


def synthetic_table(n: int, rng: np.random.Generator, version: str = "1") -> pa.Table:
    """``n`` predictions spread over 24 hours, every column of the prediction schema filled."""
    from ser.monitor.ids import new_id
    from ser.monitor.log import PREDICTION_SCHEMA

    ts_ms = np.sort(int(T0.timestamp() * 1000) + rng.integers(0, 24 * 3600 * 1000, n))
    ids = [new_id(int(t)) for t in ts_ms]
    k = len(LABELS)
    logits = rng.normal(size=(n, k)) * 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    top = probs.argmax(axis=1)

    def lists(values: np.ndarray, width: int, typ: pa.DataType) -> pa.Array:
        offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), type=typ))

    cols = {
        "prediction_id": pa.array(ids, type=pa.string()),
        "ts": pa.array(ts_ms, type=pa.timestamp("ms", tz="UTC")),
        "route": pa.array(["/v1/predict"] * n),
        "role": pa.array(["primary"] * n),
        "model_name": pa.array(["ser-emotion"] * n),
        "model_version": pa.array([version] * n),
        "duration_s": rng.uniform(1.5, 6.0, n),
        "processing_ms": rng.gamma(4.0, 1.2, n),
        "pcm_sha256": pa.array([f"{i:064x}" for i in rng.integers(0, 2**62, n)]),
        "client_name_hash": pa.nulls(n, pa.string()),
        "label": pa.array([LABELS[i] for i in top]),
        "confidence": probs.max(axis=1),
        "labels": lists(np.tile(np.array(LABELS, dtype=object), n), k, pa.string()),
        "probabilities": lists(probs.astype(np.float32), k, pa.float32()),
        "native_sr": pa.array(rng.choice([16000, 44100, 48000], n).astype(np.int32)),
        "channels": pa.array(np.ones(n, dtype=np.int32)),
        "container": pa.array(rng.choice(["WAV", "FLAC"], n)),
        "codec": pa.array(["PCM_16"] * n),
        "rms_dbfs": rng.normal(-30, 5, n),
        "peak_dbfs": rng.normal(-8, 3, n),
        "clipped_fraction": np.where(rng.random(n) < 0.01, rng.uniform(0, 0.01, n), 0.0),
        "speech_fraction": rng.beta(5, 3, n),
        "snr_db": rng.normal(45, 10, n),
        "high_band_share": rng.lognormal(np.log(0.02), 0.5, n),
        "mel_mean": lists(rng.normal(-60, 8, (n, N_MELS)).astype(np.float32), N_MELS, pa.float32()),
        "mel_std": lists(rng.normal(12, 2, (n, N_MELS)).astype(np.float32), N_MELS, pa.float32()),
    }
    return pa.Table.from_pydict(cols, schema=PREDICTION_SCHEMA)


def reference_for(model_dir: Path, rng: np.random.Generator, n: int = 2000) -> None:
    """A reference of ``n`` clips drawn from the same distributions as :func:`synthetic_table`."""
    from ser.monitor.reference import REFERENCE_SCHEMA, write_reference

    t = synthetic_table(n, rng)
    cols = {name: t[name] for name in REFERENCE_SCHEMA.names if name in t.column_names}
    cols["true_label"] = t["label"]
    write_reference(model_dir, pa.Table.from_pydict(cols, schema=REFERENCE_SCHEMA))


def model_folder(path: Path) -> Path:
    from ser.features import FeatureConfig
    from ser.model_folder import FORMAT, METADATA_FILE

    path.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "name": "ser-emotion",
        "version": "1",
        "labels": LABELS,
        "input": {"kind": "logmel", "feature_config": FeatureConfig().model_dump(mode="json"), "trim_db": 40.0},
        "evaluation": {"uar": 0.64},
    }
    (path / METADATA_FILE).write_text(json.dumps(meta))
    return path


def time_report(rows: int, work: Path) -> dict:
    from ser.monitor import store
    from ser.monitor.log import table_root
    from ser.monitor.report import monitor_report

    rng = np.random.default_rng(0)
    model = model_folder(work / "model")
    reference_for(model, rng)
    log = work / "log"
    t0 = time.perf_counter()
    table = synthetic_table(rows, rng)
    t1 = time.perf_counter()
    store.append_table(table_root(log, "predictions"), table)
    t2 = time.perf_counter()
    size = sum(p.stat().st_size for p in log.rglob("*.parquet"))
    del table
    now = T0 + dt.timedelta(days=1)
    t3 = time.perf_counter()
    rep = monitor_report(log, model, since=T0, until=now, now=now)
    t4 = time.perf_counter()
    monitor_report(log, model, since=T0, until=now, out_dir=work / "out", now=now)
    t5 = time.perf_counter()
    assert rep.data["log"]["predictions"] == rows
    return {
        "rows": rows,
        "hours": 24,
        "log_mb": round(size / 1e6, 1),
        "generate_s": round(t1 - t0, 2),
        "write_s": round(t2 - t1, 2),
        "report_s": round(t4 - t3, 2),
        "report_with_html_s": round(t5 - t4, 2),
        "rows_per_s": round(rows / (t4 - t3)),
        "flagged": rep.flagged,
        "reasons": rep.reasons,
    }


def time_writer(work: Path, n: int = 20_000) -> dict:
    """``PredictionLog.log`` on the request path, and the background writer's throughput."""
    from ser.monitor.log import PredictionLog, build_record
    from ser.monitor.stats import InputStats

    rng = np.random.default_rng(0)
    stats = InputStats(-30.0, -8.0, 0.0, 0.6, 45.0, 0.02, np.zeros(N_MELS, np.float32), np.ones(N_MELS, np.float32))
    recs = [
        build_record(
            route="/v1/predict", model_name="ser-emotion", model_version="1", labels=LABELS,
            probabilities=rng.dirichlet(np.ones(len(LABELS))), duration_s=3.0, processing_ms=4.0, stats=stats,
            pcm_sha256="0" * 64,
        )
        for _ in range(n)
    ]  # fmt: skip
    log = PredictionLog(work / "writer", flush_s=3600, max_queue=n + 1, batch_rows=n + 1)  # no write until flush()
    lat = []
    for r in recs:
        t = time.perf_counter_ns()
        log.log(r)
        lat.append(time.perf_counter_ns() - t)
    t0 = time.perf_counter()
    written = log.flush()
    t1 = time.perf_counter()
    log.close()
    lat_us = np.array(lat) / 1000
    return {
        "records": n,
        "log_call_p50_us": round(float(np.percentile(lat_us, 50)), 2),
        "log_call_p99_us": round(float(np.percentile(lat_us, 99)), 2),
        "flush_records_per_s": round(written / (t1 - t0)),
    }


def time_stats() -> dict:
    """``input_stats`` of one 3.3 s RAVDESS clip given the model's log-mel (what the service adds per request)."""
    from ser.audio import load_audio
    from ser.monitor.stats import input_stats, seen_logmel

    pre = _preprocessing()
    path = sorted(RAVDESS.glob("Actor_01/*.flac"))[0]
    y = load_audio(path)
    feats = pre.features(y)
    lm = seen_logmel(feats, pre.kind, N_MELS)
    input_stats(y, logmel=lm)
    ts = []
    for _ in range(100):
        t = time.perf_counter()
        input_stats(y, logmel=lm)
        ts.append(time.perf_counter() - t)
    return {"clip_s": round(y.size / 16000, 2), "input_stats_p50_ms": round(1000 * float(np.median(ts)), 2)}


# ----------------------------------------------------------------------------------------------------------------
# 2. detection power on real degraded clips


def _preprocessing():
    from ser.features import FeatureConfig
    from ser.model_folder import Preprocessing

    return Preprocessing(kind="logmel", feature_config=FeatureConfig().model_dump(mode="json"), trim_db=40.0)


def conditions() -> dict[str, str]:
    out = {"clean": "clean", "telephone": "telephone"}
    out.update({f"noise {s} dB": f"noise:factory1@{s}" for s in SNRS})
    out.update({f"level -{d} dB": f"level-{d}db" for d in LEVELS})
    return out


def load_clips(files: list[Path]) -> list[tuple[np.ndarray, object]]:
    """Each file decoded once (16 kHz mono) with its header."""
    from ser.audio import load_audio, probe

    return [(load_audio(f), probe(f)) for f in files]


def clip_rows(clips: list[tuple[np.ndarray, object]], condition: str) -> list[dict]:
    """Input statistics of each clip under ``condition``, computed as the service computes them."""
    from ser import degrade
    from ser.monitor.stats import input_stats, seen_logmel

    pre = _preprocessing()
    rows = []
    for i, (clean, info) in enumerate(clips):
        y = clean if condition == "clean" else degrade.apply(clean, 16000, condition, rng=i, noises=NOISES)
        lm = seen_logmel(pre.features(y), pre.kind, N_MELS)
        facts = dict(native_sr=info.sample_rate, channels=info.channels, container=info.format, codec=info.subtype)
        rows.append({**input_stats(y, logmel=lm, **facts).to_dict(), "duration_s": y.size / 16000})
    return rows


def pool_table(rows: list[dict], rng: np.random.Generator) -> pa.Table:
    """The pool as log rows (fake answers, drawn like the reference's, so only the inputs differ)."""
    from ser.monitor.log import PREDICTION_SCHEMA

    out = []
    for r in rows:
        p = rng.dirichlet(np.ones(len(LABELS)))
        out.append(
            {**r, "prediction_id": "x", "ts": T0, "role": "primary", "model_version": "1",
             "label": LABELS[int(p.argmax())], "confidence": float(p.max())}
        )  # fmt: skip
    return pa.Table.from_pylist(out, schema=PREDICTION_SCHEMA)


def _reference(rows: list[dict], rng: np.random.Generator):
    from ser.monitor.reference import Reference, build_reference
    from ser.monitor.stats import InputStats

    fields = set(InputStats.__dataclass_fields__)
    probs = [rng.dirichlet(np.ones(len(LABELS))) for _ in rows]
    table = build_reference(
        [InputStats(**{k: v for k, v in r.items() if k in fields}) for r in rows],
        [r["duration_s"] for r in rows],
        labels=[LABELS[int(p.argmax())] for p in probs],
        confidences=[float(p.max()) for p in probs],
    )
    return Reference(table, {})


def _flag_rates(ref, pool: pa.Table, reps: int, rng: np.random.Generator) -> dict:
    from ser.monitor.drift import DriftConfig
    from ser.monitor.report import WindowDrift, flagged_names

    cfg = DriftConfig()
    per_window = {}
    for n in WINDOWS:
        hits, names = 0, Counter()
        for _ in range(reps):
            wd = WindowDrift(ref, cfg, LABELS, "1")
            wd.update(pool.take(pa.array(rng.integers(0, pool.num_rows, n))))
            res = wd.results()
            res.pop("prediction_drift")  # the answers are fake: judge the inputs only
            flagged = flagged_names(res)
            hits += bool(flagged)
            names.update(flagged)
        per_window[str(n)] = {"flagged_rate": hits / reps, "flagged_on": dict(names.most_common(6))}
    return per_window


def detection(reps: int, quick: bool) -> dict:
    """Reference = the clean statistics of a set of clips of all 24 actors; live windows bootstrapped from the same
    clips under each degradation (the degradation alone differs). Plus the clean clips of 12 actors against a
    reference of the other 12 (a change of speakers)."""
    step = 20 if quick else 10
    files = [f for a in range(1, 25) for f in sorted((RAVDESS / f"Actor_{a:02d}").glob("*.flac"))[::step]]
    actors = np.array([int(f.parent.name.split("_")[1]) for f in files])
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    clips = load_clips(files)
    clean = clip_rows(clips, "clean")
    ref = _reference(clean, rng)
    out: dict = {"clips": len(files), "step": step, "reps": reps, "conditions": {}}
    for name, condition in conditions().items():
        rows = clean if condition == "clean" else clip_rows(clips, condition)
        out["conditions"][name] = _flag_rates(ref, pool_table(rows, rng), reps, rng)
        print(f"  {name}: " + ", ".join(f"{n}: {v['flagged_rate']:.0%}" for n, v in out["conditions"][name].items()))
    half = np.isin(actors % 4, (0, 1))
    ref_a = _reference([r for r, h in zip(clean, half, strict=True) if h], rng)
    pool_b = pool_table([r for r, h in zip(clean, half, strict=True) if not h], rng)
    out["other_speakers"] = _flag_rates(ref_a, pool_b, reps, rng)
    print(
        "  clean, other speakers: "
        + ", ".join(f"{n}: {v['flagged_rate']:.0%}" for n, v in out["other_speakers"].items())
    )
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["smallest_detected"] = smallest_detected(out["conditions"])
    return out


def smallest_detected(conds: dict) -> dict:
    """Per window size: the mildest noise SNR and level drop detected (≥ 80 % of replicates), telephone yes/no,
    clean false-alarm rate."""
    out = {}
    for n in map(str, WINDOWS):
        hit = {name: v[n]["flagged_rate"] >= 0.8 for name, v in conds.items()}
        out[n] = {
            "telephone": hit["telephone"],
            "noise_snr_db": max((s for s in SNRS if hit[f"noise {s} dB"]), default=None),
            "level_drop_db": min((d for d in LEVELS if hit[f"level -{d} dB"]), default=None),
            "clean_false_alarm_rate": conds["clean"][n]["flagged_rate"],
        }
    return out


# ----------------------------------------------------------------------------------------------------------------


def section(doc: dict) -> str:
    r, w, s, d = doc["report"], doc["writer"], doc["stats"], doc["detection"]
    lines = [
        "## Monitoring: report time and drift detection power",
        "",
        f"Machine: {doc['machine']} (load average {doc['load_average']} from other jobs while it ran). "
        f"Date: {doc['date']}. Produced by `benchmarks/monitor.py`.",
        "",
        f"Report over a synthetic log of {r['rows']:,} predictions in 24 hour partitions ({r['log_mb']} MB of "
        "Parquet; every statistic, 64 log-mel bands × mean / std, category mixes, quality shares, label mix and "
        "confidence against a 2,000-clip reference):",
        "",
        "| rows | report s | with HTML s | rows / s | log write s |",
        "|---|---|---|---|---|",
        f"| {r['rows']:,} | {r['report_s']} | {r['report_with_html_s']} | {r['rows_per_s']:,} | {r['write_s']} |",
        "",
        f"Request path: `PredictionLog.log` p50 {w['log_call_p50_us']} µs, p99 {w['log_call_p99_us']} µs "
        f"(a `put_nowait`); the writer thread writes {w['flush_records_per_s']:,} records / s; `input_stats` of a "
        f"{s['clip_s']} s clip given the model's log-mel: {s['input_stats_p50_ms']} ms (p50).",
        "",
        f"Detection power on real RAVDESS clips: the reference is the clean statistics of {d['clips']} clips (all 24 "
        f"actors, every {d['step']}th file), live windows are bootstrapped from the same clips under each "
        f"degradation, so only the degradation differs ({d['reps']} replicates per cell; detected = flagged in "
        "≥ 80 % of them; noise: the held-out factory1 recording at an SNR over the whole clip):",
        "",
        "| window | telephone | mildest noise detected | smallest level drop detected | clean windows flagged |",
        "|---|---|---|---|---|",
    ]
    for n, v in d["smallest_detected"].items():
        snr = f"{v['noise_snr_db']} dB SNR" if v["noise_snr_db"] is not None else "none"
        lvl = f"{v['level_drop_db']} dB" if v["level_drop_db"] is not None else "none"
        lines.append(
            f"| {int(n):,} | {'yes' if v['telephone'] else 'no'} | {snr} | {lvl} | {v['clean_false_alarm_rate']:.0%} |"
        )
    lines += ["", "Flag rate per condition and window (what was flagged most often):", ""]
    lines += ["| condition | " + " | ".join(f"{n:,}" for n in WINDOWS) + " |", "|---|" + "---|" * len(WINDOWS)]
    for name, per in d["conditions"].items():
        cells = []
        for n in WINDOWS:
            v = per[str(n)]
            top = ", ".join(list(v["flagged_on"])[:3])
            cells.append(f"{v['flagged_rate']:.0%}" + (f" ({top})" if top else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    other = d["other_speakers"]
    lines += [
        "",
        "Reading it: noise shows in `snr_db` first. RAVDESS pauses are close to digital silence, so even a faint "
        "noise floor moves every clip's SNR estimate (a reference recorded with real microphone noise would make "
        "this less sensitive); stronger noise moves the log-mel bands, then the speech share. A telephone channel "
        "empties the band above 4 kHz (`high_band_share`, the narrow-band share) and moves the bands and the VAD's "
        "speech share. A level drop shows in the band means and the RMS first, then the peak and the speech share "
        "(the VAD's -50 dBFS gate). The live windows here are the reference's own clips, degraded: the numbers are "
        "what the degradation alone does, the most sensitive case.",
        "",
        "A change of speakers is drift too: windows of the clean clips of 12 actors against a reference of the other "
        "12 are flagged in "
        + ", ".join(f"{other[str(n)]['flagged_rate']:.0%} ({int(n):,})" for n in WINDOWS)
        + " of replicates (on "
        + ", ".join(list(other[str(WINDOWS[-1])]["flagged_on"])[:4])
        + "): a pool of 12 speakers is not the population, and a bootstrapped window repeats each of its few clips "
        "many times, so its tests are as sure as a window of that many independent clips. The test suite checks "
        "the unbootstrapped case (36 clean clips of 12 actors against 36 of the other 12: nothing flagged).",
        "",
        SERVICE_LATENCY_TODO,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="monitoring report time and drift detection power")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="half the clips (a smoke run)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ser-monitor-bench-"))
    try:
        print("writer and stats ...", flush=True)
        writer, stats = time_writer(work), time_stats()
        print(f"report on {args.rows:,} rows ...", flush=True)
        report = time_report(args.rows, work)
        print(f"  {report}", flush=True)
        print("detection power ...", flush=True)
        det = detection(args.reps, args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc = {
        "machine": machine(),
        "date": dt.date.today().isoformat(),
        "load_average": round(os.getloadavg()[0], 1),
        "report": report,
        "writer": writer,
        "stats": stats,
        "detection": det,
        "service_latency": SERVICE_LATENCY_TODO,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(doc, indent=2) + "\n")
    replace_section("## Monitoring", section(doc))
    print(json.dumps(doc["detection"]["smallest_detected"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
