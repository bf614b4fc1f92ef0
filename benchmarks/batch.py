"""Batch benchmark: ``ser batch`` over an archive of long calls made of real RAVDESS speech, locally and on Ray.

Usage::

    nice -n 10 .venv/bin/python benchmarks/batch.py --model DIR [--hours 2] [--workers 2] [--repeat 2] [--keep]

The corpus: RAVDESS clips (``../shared/data/ravdess``, 16 kHz mono FLAC) in a seeded random order, joined with
pauses of 0.3-1.5 s of low noise into calls of 2-5 minutes, until the calls total ``--hours`` of audio (the 1440
clips hold 1.5 h, so clips come back in later calls). The calls are written as 16 kHz PCM16 WAV to ``--corpus``
(default: a temporary folder, deleted afterwards unless ``--keep``); never to the repository.

Each run is the ``ser batch`` command in its own process, the way a user runs it, over the whole corpus into a
fresh output folder, with ``--workers`` workers of 1 thread each:

- ``local``: ``--workers N`` (a local process pool);
- ``ray``: ``--ray local --workers N`` (the command starts a local Ray cluster of N CPUs; one task per file).

The two runs alternate ``--repeat`` times (local, ray, local, ray, ...) so that a change in the machine's load
hits both alike. Reported per run: wall time of the command (start-up, model load and Ray start included), the
job's own wall time, hours of audio per hour of wall time, files and segments, and the worker time spent outside
files per file (job wall × workers - the sum of the files' ``processing_s``, over the files). Ray's fixed start-up
is measured on its own (a fresh process: ``ray.init`` of a local cluster with the same CPUs until a first task has
answered), and the Ray overhead per file is (mean Ray job wall - mean local job wall - start-up) / files: both
paths run the same per-file code, so the rest is Ray's per-task cost. The machine's load average before and after
each run is recorded: on a shared machine, other work slows every run. Writes ``benchmarks/results/batch.json`` and
the "Batch over call archives" section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from _common import RESULTS_DIR, SHARED, machine, replace_section

RAVDESS = Path(os.environ.get("SER_RAVDESS", SHARED / "ravdess"))
RESULTS_JSON = RESULTS_DIR / "batch.json"
HEADING = "## Batch over call archives"
SR = 16_000
ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(msg, flush=True)


def build_corpus(dest: Path, hours: float, seed: int = 0) -> dict[str, Any]:
    """Calls of 2-5 minutes made of RAVDESS clips and short pauses, ``hours`` of audio in all → ``dest/*.wav``."""
    clips = sorted(RAVDESS.glob("Actor_*/*.flac")) or sorted(RAVDESS.glob("Actor_*/*.wav"))
    if not clips:
        raise SystemExit(f"no RAVDESS clips under {RAVDESS}")
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    dest.mkdir(parents=True, exist_ok=True)
    order: list[Path] = []
    total, files = 0.0, 0
    while total < hours * 3600:
        target = rng.uniform(120, 300)
        parts: list[np.ndarray] = []
        length = 0.0
        while length < target:
            if not order:
                order = clips.copy()
                rng.shuffle(order)
            y, sr = sf.read(order.pop(), dtype="float32", always_2d=True)
            if sr != SR:
                raise SystemExit(f"expected {SR} Hz clips, got {sr}")
            gap = (0.001 * noise.standard_normal(int(rng.uniform(0.3, 1.5) * SR))).astype(np.float32)
            parts += [y.mean(axis=1), gap]
            length += (y.shape[0] + gap.size) / SR
        sf.write(dest / f"call{files:04d}.wav", np.concatenate(parts), SR, subtype="PCM_16")
        total += length
        files += 1
    return {"files": files, "audio_h": round(total / 3600, 3), "clips_available": len(clips)}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def busy_s(out: Path) -> float:
    """Seconds the workers spent inside files (the sum of the files table's ``processing_s``)."""
    sys.path.insert(0, str(ROOT / "src"))
    from ser.batch.store import read_table

    return float(sum(v for v in read_table(out, "files", ["processing_s"])["processing_s"].to_pylist() if v))


def run_batch(name: str, corpus: Path, out: Path, model: Path, extra: list[str], workers: int) -> dict[str, Any]:
    """One ``ser batch`` command; its JSON outcome plus the command's wall time and the load around it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "ser", "batch", str(corpus), "--out", str(out), "--model", str(model), "--json"]
    load_before = load_average()
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, *extra], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: ser batch exited {proc.returncode}: {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout)
    busy = busy_s(out)
    row = {
        "run": name,
        "options": " ".join(extra),
        "files": res["files"],
        "failed": res["failed"],
        "segments": res["segments"],
        "audio_h": round(res["audio_s"] / 3600, 3),
        "command_wall_s": round(wall, 1),
        "job_wall_s": round(res["wall_s"], 1),
        "audio_h_per_wall_h": round(res["audio_s"] / wall, 1),
        "busy_s": round(busy, 1),
        "outside_files_per_file_s": round((res["wall_s"] * workers - busy) / max(1, res["files"]), 3),
        "load_before": load_before,
        "load_after": load_average(),
    }
    log(f"{name}: {row}")
    return row


RAY_START = """
import sys, time
t0 = time.perf_counter()
import ray
ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
ray.get(ray.remote(lambda: 1).remote())
print(time.perf_counter() - t0)
ray.shutdown()
"""


def ray_start_s(cpus: int) -> float:
    """Seconds from a fresh process' ``import ray`` to a local cluster's first task answered (``ray.shutdown`` not
    counted)."""
    proc = subprocess.run([sys.executable, "-c", RAY_START, str(cpus)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"ray start-up measurement failed: {proc.stderr[-2000:]}")
    return round(float(proc.stdout.strip().splitlines()[-1]), 2)


def section(result: dict[str, Any]) -> str:
    c, runs = result["corpus"], result["runs"]
    lines = [
        HEADING,
        "",
        f"Machine: {result['machine']}. Date: {result['date']}. Produced by `benchmarks/batch.py` "
        "(load averages in the table: about 1 is a quiet 2-core machine, the benchmark's own work; more is "
        "other jobs).",
        "",
        f"Corpus: {c['files']} calls of 2-5 minutes, {c['audio_h']} h of audio in all, made of the "
        f"{c['clips_available']} RAVDESS clips (16 kHz mono; clips reused across calls) joined with 0.3-1.5 s pauses;"
        f" written to a temporary folder, not kept. Model: {result['model']}. Each run is the `ser batch` command "
        f"(`--json`, a fresh `--out`), {result['workers']} workers of 1 onnxruntime thread each.",
        "",
        "| run | options | files | segments | audio h | command wall s | job wall s | audio h / wall h "
        "| worker s outside files, per file | load before → after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['run']} | `{r['options']}` | {r['files']} | {r['segments']} | {r['audio_h']} | "
            f"{r['command_wall_s']} | {r['job_wall_s']} | {r['audio_h_per_wall_h']} | "
            f"{r['outside_files_per_file_s']} | "
            f"{' '.join(map(str, r['load_before']))} → {' '.join(map(str, r['load_after']))} |"
        )
    o = result["ray_overhead"]
    lines += [
        "",
        f"Mean job wall: local {o['local_mean_s']} s, Ray {o['ray_mean_s']} s; Ray's start-up alone (fresh process, "
        f"`ray.init` of a {result['workers']}-CPU local cluster to a first task answered): {o['start_s']} s. "
        f"Ray overhead per file beyond its start-up: **{o['per_file_s']} s** ((Ray - local - start-up) / "
        f"{result['corpus']['files']} files; a negative value means the difference is within the noise of the "
        f"shared machine). Same rows from both paths: **{result['same_rows']}**.",
        "",
        '"Worker s outside files, per file" is (job wall × workers - the seconds workers spent inside files, the sum'
        " of the files table's `processing_s`) / files: start-up, model loads, scheduling, transfers and idle"
        " workers at the end, per file; the Ray row minus the local row is Ray's cost per file measured inside the"
        " same run, start-up included (with few, long files the start-up dominates it).",
        "",
    ]
    return "\n".join(lines)


def same_rows(a: Path, b: Path) -> bool:
    sys.path.insert(0, str(ROOT / "src"))
    from ser.batch.store import read_table

    def load(out: Path) -> Any:
        seg = read_table(out, "segments").to_pandas().sort_values(["file", "channel", "segment"])
        return seg.reset_index(drop=True)

    return bool(load(a).equals(load(b)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="a model folder (model.onnx + metadata.json)")
    ap.add_argument("--model-desc", default=None, help="how the model was made, for the results")
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="local / Ray pairs, alternating")
    ap.add_argument("--corpus", type=Path, default=None, help="where to write the calls (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the corpus and the outputs")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write results")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ser-batch-bench-"))
    corpus = args.corpus or tmp / "calls"
    try:
        t0 = time.perf_counter()
        if not any(corpus.glob("*.wav")):
            info = build_corpus(corpus, args.hours)
        else:
            info = {"files": len(list(corpus.glob("*.wav"))), "audio_h": None, "clips_available": 1440}
        log(f"corpus: {info} in {time.perf_counter() - t0:.1f} s")
        w = str(args.workers)
        runs: list[dict[str, Any]] = []
        for i in range(args.repeat):
            local = ["--workers", w]
            runs.append(run_batch("local", corpus, tmp / f"out-local{i}", args.model, local, args.workers))
            ray = ["--ray", "local", "--workers", w]
            runs.append(run_batch("ray", corpus, tmp / f"out-ray{i}", args.model, ray, args.workers))
        start = ray_start_s(args.workers)
        local_s = statistics.mean(r["job_wall_s"] for r in runs if r["run"] == "local")
        ray_s = statistics.mean(r["job_wall_s"] for r in runs if r["run"] == "ray")
        info["audio_h"] = info["audio_h"] or runs[0]["audio_h"]
        result = {
            "machine": machine(),
            "date": dt.date.today().isoformat(),
            "model": args.model_desc or str(args.model),
            "workers": args.workers,
            "corpus": info,
            "runs": runs,
            "ray_overhead": {
                "local_mean_s": round(local_s, 1),
                "ray_mean_s": round(ray_s, 1),
                "start_s": start,
                "per_file_s": round((ray_s - local_s - start) / max(1, runs[0]["files"]), 3),
            },
            "same_rows": same_rows(tmp / "out-local0", tmp / "out-ray0"),
        }
        log(json.dumps(result, indent=2))
        if not args.no_write:
            RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n")
            replace_section(HEADING, section(result))
            log(f"wrote {RESULTS_JSON} and the section of benchmarks/RESULTS.md")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
