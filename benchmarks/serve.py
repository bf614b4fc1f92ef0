"""Serving benchmark on real RAVDESS clips: in-process latency, HTTP ``POST /v1/predict``, real-time streams.

Usage::

    .venv/bin/python benchmarks/serve.py [--model DIR] [--quick] [--calls 300] [--levels 10,25,50,100,150,200,300]
        [--processes 2] [--ramps 3]

(a) **In-process latency** per 3 s clip (centre crops of real RAVDESS clips) through :class:`ser.inference.Predictor`
    with 1 onnxruntime thread and BLAS limited to 1 thread, the process pinned to one core when the OS allows:
    ``predict`` on decoded audio (features + ONNX), the same with FLAC decoding from memory included (what the
    service does per upload), and features / ONNX alone. p50 / p95 over ``--calls`` calls each.
(b) **HTTP**: ``ser serve`` as a uvicorn subprocess on 127.0.0.1; an async httpx client posts the 3 s FLAC clips
    with 1, 4 and 16 concurrent clients (``--http-levels``), each level bounded by a request count and a time limit;
    latency p50 / p95 and throughput.
(c) **Streams**: N concurrent ``WS /v1/stream`` clients send 20 ms PCM16 frames at real-time pace (real speech,
    clips concatenated, each stream from its own offset); update latency is the wall time from sending the frame
    that completes a hop to receiving that hop's partial. N is ramped (``--levels``), each level for
    ``--level-s`` seconds of audio; a level passes when update latency p95 <= 150 ms, no frame is dropped (every
    expected partial arrives, no error message, ``done`` at the end, every connection accepted) and the client kept
    real time. ``max_streams`` is the last level that passed; the ramp stops at the first that does not.
    ``--processes N`` serves with ``ser serve --processes N`` (CPU reported per worker process too, which shows how
    evenly the streams were spread); ``--ramps K`` runs the ramp K times on the same server (the machine is shared:
    each ramp and the load average before each level are reported).

Without ``--model`` the product's ``cnn`` recipe (src/ser/train/recipes.py) is built with **untrained** (random,
seeded) weights and exported to ONNX: the timing is that of the real architecture, the predictions mean nothing.
This needs torch (the service itself does not).

The client runs on the same machine as the server, so at high load both compete for the same cores (the CPU each
used is reported per level). A full run writes ``benchmarks/results/serve.json`` and the matching section of
``benchmarks/RESULTS.md`` (machine and date included); ``--quick`` (a smoke run: fewer calls, short levels) writes
neither unless ``--write`` is given. A full run takes about 3-4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from _common import RESULTS_DIR, SHARED, machine, replace_section

RAVDESS = Path(os.environ.get("SER_RAVDESS", SHARED / "ravdess"))
RESULTS_JSON = RESULTS_DIR / "serve.json"
HEADING = "## Serving: latency, HTTP, real-time streams"
LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
SR = 16_000
CLIP_S = 3.0
FRAME_S = 0.02
HOP_S, WINDOW_S = 0.5, 2.0
LATENCY_BOUND_MS = 150.0
AIM_CLIP_P50_MS = 10.0
AIM_STREAMS = 100
SERVE_CMD = [sys.executable, "-m", "ser", "serve"]


def pct(xs: list[float] | np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(np.asarray(xs, dtype=np.float64), q)), 3) if len(xs) else None


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------------- inputs


def build_cnn_model(out: Path) -> tuple[Path, dict[str, Any]]:
    """The ``cnn`` recipe with untrained (seeded random) weights, exported as a model folder."""
    from ser.export import write_model_folder
    from ser.features import FeatureConfig
    from ser.models.factory import build_model
    from ser.train.recipes import get_recipe

    spec = get_recipe("cnn")
    fc = FeatureConfig()
    model = build_model(spec.model, len(LABELS), fc.n_mels, seed=0, **spec.params)
    extra = {
        "name": "ser-emotion",
        "version": "bench-untrained",
        "training": {"weights": "untrained (random init, seed 0): for timing only"},
    }
    path = write_model_folder(
        out, model, labels=LABELS, feature_config=fc, kind=spec.features, trim_db=spec.trim_db, extra=extra
    )
    info = {
        "recipe": "cnn",
        "params": spec.params,
        "n_params": int(model.n_params()),
        "weights": "untrained (random init, seed 0): timing only, predictions meaningless",
    }
    return path, info


def load_clips(n: int) -> list[tuple[str, np.ndarray]]:
    """``n`` real RAVDESS clips spread over all actors, decoded to 16 kHz mono float32."""
    from ser.audio import load_audio

    files = sorted(RAVDESS.glob("Actor_*/*.*"))
    files = [f for f in files if f.suffix.lower() in (".flac", ".wav")]
    if not files:
        sys.exit(f"error: no RAVDESS clips under {RAVDESS} (set SER_SHARED_DATA or SER_RAVDESS)")
    step = max(1, len(files) // n)
    return [(f.name, load_audio(f, SR)) for f in files[::step][:n]]


def centre_crop(y: np.ndarray, seconds: float) -> np.ndarray:
    n = round(seconds * SR)
    if y.size <= n:
        return y
    a = (y.size - n) // 2
    return np.ascontiguousarray(y[a : a + n])


def flac_bytes(y: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, SR, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------- (a) in-process


@contextlib.contextmanager
def pinned_to_one_core():
    """Pin this thread (the one that runs onnxruntime with 1 thread) to the last allowed core; yields the core
    (None where affinity cannot be set). Restored on exit so that later subprocesses get every core."""
    getter = getattr(os, "sched_getaffinity", None)
    setter = getattr(os, "sched_setaffinity", None)
    if getter is None or setter is None:
        yield None
        return
    before = getter(0)
    core = max(before)
    try:
        setter(0, {core})
    except OSError:
        yield None
        return
    try:
        yield core
    finally:
        setter(0, before)


def time_calls(fn, inputs: list[Any], calls: int, warmup: int) -> list[float]:
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    out = []
    for i in range(calls):
        x = inputs[i % len(inputs)]
        t0 = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def bench_inprocess(model_dir: Path, crops: list[np.ndarray], calls: int) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from ser.audio import decode_bytes
    from ser.inference import Predictor

    blobs = [flac_bytes(y) for y in crops]
    with threadpool_limits(limits=1), pinned_to_one_core() as core:
        predictor = Predictor(model_dir, threads=1)
        feats = [predictor.pre.features(y) for y in crops]
        warm = min(20, calls)
        runs = {
            "predict": time_calls(predictor.predict, crops, calls, warm),
            "predict_with_decode": time_calls(lambda b: predictor.predict(decode_bytes(b, SR)), blobs, calls, warm),
            "features": time_calls(predictor.pre.features, crops, calls, warm),
            "onnx": time_calls(predictor.logits, feats, calls, warm),
        }
    res: dict[str, Any] = {
        "calls": calls,
        "clips": len(crops),
        "clip_s": round(float(np.mean([y.size / SR for y in crops])), 3),
        "frames": int(np.median([f.shape[1] for f in feats])),
        "onnxruntime_threads": 1,
        "pinned_cpu": core,
    }
    for name, ms in runs.items():
        res[name] = {"p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95), "mean_ms": round(float(np.mean(ms)), 3)}
    return res


# ---------------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """Child process ids of ``pid`` (Linux /proc; [] elsewhere): the worker processes of ``--processes N``."""
    try:
        pids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []
    # not multiprocessing's resource tracker, a helper of the supervisor
    return [p for p in pids if b"resource_tracker" not in _cmdline(p)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log_path: Path

    def cpu(self) -> float:
        """CPU seconds of the server: its own and its worker processes' (several processes)."""
        return cpu_seconds(self.proc.pid) + sum(self.cpu_per_process().values())

    def cpu_per_process(self) -> dict[int, float]:
        return {pid: cpu_seconds(pid) for pid in children(self.proc.pid)}

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def start_server(model_dir: Path, workdir: Path, max_streams: int, blas_threads: int, processes: int = 1) -> Server:
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
    env["SER_MAX_STREAMS"] = str(max_streams)  # the default (64) would refuse the ramp's larger levels
    if blas_threads > 0:  # as the service image sets them (docker/service.Dockerfile)
        env.update({k: str(blas_threads) for k in BLAS_ENV})
    log_path = workdir / "server.log"
    cmd = [*SERVE_CMD, "--model", str(model_dir), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--processes", str(processes)]
    with log_path.open("w") as out:
        proc = subprocess.Popen(
            [*cmd, "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"error: ser serve exited ({proc.returncode}):\n{server.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        time.sleep(0.2)
    server.stop()
    sys.exit(f"error: ser serve not ready after 120 s:\n{server.log_tail()}")


# ---------------------------------------------------------------------------------------------------- (b) HTTP


async def http_level(url: str, blobs: list[bytes], concurrency: int, max_requests: int, max_s: float) -> dict:
    import httpx

    latencies: list[float] = []
    processing: list[float] = []  # the server's own decode + inference time per request
    errors: dict[str, int] = {}
    issued = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        t_start = time.perf_counter()
        deadline = t_start + max_s

        async def worker() -> None:
            nonlocal issued
            while issued < max_requests and time.perf_counter() < deadline:
                blob = blobs[issued % len(blobs)]
                issued += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/predict", content=blob, headers={"content-type": "audio/flac"})
                    key = None if r.status_code == 200 else str(r.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                if key is None:
                    latencies.append((time.perf_counter() - t0) * 1e3)
                    processing.append(float(r.json()["processing_ms"]))
                else:
                    errors[key] = errors.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t_start
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "p50_ms": pct(latencies, 50),
        "p95_ms": pct(latencies, 95),
        "p99_ms": pct(latencies, 99),
        "server_processing_ms_p50": pct(processing, 50),
        "server_processing_ms_p95": pct(processing, 95),
        "throughput_rps": round(len(latencies) / elapsed, 2) if elapsed > 0 else None,
    }


def bench_http(server: Server, blobs: list[bytes], levels: list[int], per_level: int, max_s: float) -> list[dict]:
    out = []
    asyncio.run(http_level(server.url, blobs, 2, 6, 30))  # warm-up: connections, both inference threads
    for c in levels:
        cpu0, wall0, client0 = server.cpu(), time.perf_counter(), time.process_time()
        row = asyncio.run(http_level(server.url, blobs, c, max(per_level, 8 * c), max_s))
        wall = time.perf_counter() - wall0
        row["server_cpu_pct"] = round(100 * (server.cpu() - cpu0) / wall, 1)
        row["client_cpu_pct"] = round(100 * (time.process_time() - client0) / wall, 1)
        log(
            f"  HTTP c={c:>3}: {row['requests']} ok, errors {row['errors'] or 0}, p50 {row['p50_ms']} ms, "
            f"p95 {row['p95_ms']} ms, {row['throughput_rps']} req/s (server decode + inference p50 "
            f"{row['server_processing_ms_p50']} ms; server CPU {row['server_cpu_pct']} %)"
        )
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------------- (c) streams


@dataclass
class StreamClient:
    """One real-time stream: its audio, the send time of every frame that completes a hop, what came back."""

    idx: int
    pcm: np.ndarray  # int16 samples, the whole stream
    start_tick: int
    ws: Any = None
    sent_samples: int = 0
    hop_sent_at: dict[int, float] = field(default_factory=dict)  # hop-end sample index → perf_counter
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    partials: int = 0
    finals: int = 0
    errors: list[str] = field(default_factory=list)
    done: bool = False
    failure: str | None = None
    receiver: asyncio.Task | None = None
    done_event: asyncio.Event = field(default_factory=asyncio.Event)


async def _open_stream(s: StreamClient, uri: str, hop_samples: int, sem: asyncio.Semaphore) -> None:
    from websockets.asyncio.client import connect

    async with sem:
        try:
            s.ws = await connect(uri, compression=None, max_queue=None, ping_interval=None, open_timeout=30)
            start = {"type": "start", "sample_rate": SR, "encoding": "pcm16", "hop_s": HOP_S, "window_s": WINDOW_S}
            await s.ws.send(json.dumps(start))
            msg = json.loads(await asyncio.wait_for(s.ws.recv(), 30))
        except Exception as exc:  # refused, reset, timed out: the level fails
            s.failure = f"connect: {type(exc).__name__}: {exc}"[:200]
            return
    if msg.get("type") != "ready":
        s.failure = f"no ready: {msg}"[:200]
        return
    s.receiver = asyncio.create_task(_receive(s, hop_samples))


async def _receive(s: StreamClient, hop_samples: int) -> None:
    try:
        async for raw in s.ws:
            now = time.perf_counter()
            if not isinstance(raw, str):
                continue
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind == "partial":
                s.partials += 1
                sent = s.hop_sent_at.pop(round(msg["t"] * SR), None)
                if sent is not None:
                    s.latencies_ms.append((now - sent) * 1e3)
                s.server_ms.append(float(msg.get("latency_ms") or 0.0))
            elif kind == "final":
                s.finals += 1
            elif kind == "error":
                s.errors.append(str(msg.get("code")))
            elif kind == "done":
                s.done = True
                s.done_event.set()
    except Exception as exc:  # connection closed abnormally
        s.failure = s.failure or f"receive: {type(exc).__name__}: {exc}"[:200]
    finally:
        s.done_event.set()


async def stream_level(uri: str, audio: np.ndarray, n: int, seconds: float, seed: int) -> dict[str, Any]:
    frame = round(FRAME_S * SR)
    hop = round(HOP_S * SR)
    n_frames = round(seconds / FRAME_S)
    per_hop = hop // frame
    rng = random.Random(seed)
    streams = []
    for i in range(n):
        off = rng.randrange(0, audio.size // frame) * frame
        pcm = np.roll(audio, -off)[: n_frames * frame]
        if pcm.size < n_frames * frame:
            pcm = np.resize(audio, n_frames * frame)
        streams.append(StreamClient(i, pcm, start_tick=i % per_hop))  # staggered over one hop
    sem = asyncio.Semaphore(16)
    t_connect = time.perf_counter()
    await asyncio.gather(*(_open_stream(s, uri, hop, sem) for s in streams))
    connect_s = time.perf_counter() - t_connect
    live = [s for s in streams if s.failure is None]

    # the sender: one ticker every 20 ms sends the next frame of every live stream (real-time pace)
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    t0 = loop.time()
    total_ticks = n_frames + per_hop
    for tick in range(total_ticks):
        target = t0 + tick * FRAME_S
        delay = target - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(max(0.0, loop.time() - target) * 1e3)
        for s in live:
            k = tick - s.start_tick
            if s.failure is not None or not 0 <= k < n_frames:
                continue
            end = (k + 1) * frame
            if end % hop == 0:
                s.hop_sent_at[end] = time.perf_counter()
            try:
                await s.ws.send(s.pcm[k * frame : end].tobytes())
            except Exception as exc:
                s.failure = f"send: {type(exc).__name__}"
            s.sent_samples = end
    wall = loop.time() - t0
    audio_s = (total_ticks - 1) * FRAME_S + FRAME_S

    for s in live:
        if s.failure is None:
            with contextlib.suppress(Exception):
                await s.ws.send(json.dumps({"type": "end"}))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(s.done_event.wait() for s in live)), 30)
    for s in streams:
        if s.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.ws.close(), 5)
        if s.receiver is not None:
            s.receiver.cancel()
            with contextlib.suppress(BaseException):
                await s.receiver

    lat = [x for s in streams for x in s.latencies_ms]
    server_ms = [x for s in streams for x in s.server_ms]
    expected = sum(s.sent_samples // hop for s in streams)
    partials = sum(s.partials for s in streams)
    failures = [s.failure for s in streams if s.failure]
    errors: dict[str, int] = {}
    for s in streams:
        for code in s.errors:
            errors[code] = errors.get(code, 0) + 1
    not_done = sum(1 for s in live if not s.done)
    # The protocol has no per-frame acknowledgement: a frame the server dropped shows as a missing partial (partials
    # follow the sample count), an error message, a stream that failed or never said done.
    missing = max(0, expected - partials)
    dropped = bool(missing or errors or failures or not_done)
    realtime = audio_s / wall if wall > 0 else 0.0
    p95 = pct(lat, 95)
    ok = not dropped and p95 is not None and p95 <= LATENCY_BOUND_MS and realtime >= 0.95
    return {
        "streams": n,
        "seconds": seconds,
        "ok": ok,
        "update_latency_ms_p50": pct(lat, 50),
        "update_latency_ms_p95": p95,
        "update_latency_ms_max": round(max(lat), 3) if lat else None,
        "server_partial_ms_p50": pct(server_ms, 50),
        "server_partial_ms_p95": pct(server_ms, 95),
        "partials_expected": expected,
        "partials_received": partials,
        "missing_partials": missing,
        "dropped_frames": dropped,
        "finals": sum(s.finals for s in streams),
        "errors": errors,
        "failed_streams": len(failures),
        "failure_examples": failures[:3],
        "not_done": not_done,
        "connect_s": round(connect_s, 2),
        "realtime_factor": round(realtime, 3),
        "sender_lag_ms_p95": pct(lags, 95),
        "sender_lag_ms_max": round(max(lags), 1) if lags else None,
    }


def stream_route_present(model_dir: Path) -> bool:
    from ser.serve.app import Settings, create_app

    app = create_app(Settings(model_dir=model_dir))
    return any(getattr(r, "path", None) == "/v1/stream" for r in app.routes)


def run_async(coro):
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    except ImportError:
        return asyncio.run(coro)


def bench_streams(server: Server, audio: np.ndarray, levels: list[int], seconds: float) -> dict[str, Any]:
    uri = server.url.replace("http://", "ws://") + "/v1/stream"
    rows = []
    max_ok = 0
    for i, n in enumerate(levels):
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        cpu0, wall0, client0 = server.cpu(), time.perf_counter(), time.process_time()
        per0 = server.cpu_per_process()
        row = run_async(stream_level(uri, audio, n, seconds, seed=i))
        wall = time.perf_counter() - wall0
        used = server.cpu() - cpu0
        row["server_cpu_pct"] = round(100 * used / wall, 1)
        row["client_cpu_pct"] = round(100 * (time.process_time() - client0) / wall, 1)
        # CPU the server spent per stream-second of audio: what a stream costs, whether or not the cores were free
        row["server_cpu_ms_per_stream_s"] = round(1e3 * used / (n * seconds), 2)
        if len(per0) > 1:  # several processes: how evenly the kernel spread the streams shows in their CPU
            per1 = server.cpu_per_process()
            row["server_cpu_pct_per_process"] = sorted(
                (round(100 * (per1[p] - per0[p]) / wall, 1) for p in per0 if p in per1), reverse=True
            )
        row["load_1m_before"] = round(load, 2) if load is not None else None
        rows.append(row)
        log(
            f"  streams {n:>4}: {'ok  ' if row['ok'] else 'FAIL'} update latency p50 {row['update_latency_ms_p50']} "
            f"/ p95 {row['update_latency_ms_p95']} ms, partials {row['partials_received']}/"
            f"{row['partials_expected']}, dropped {'yes' if row['dropped_frames'] else 'no'}, "
            f"errors {row['errors'] or 0}, failed "
            f"{row['failed_streams']}, real-time x{row['realtime_factor']} (server CPU {row['server_cpu_pct']} %, "
            f"client {row['client_cpu_pct']} %; per process {row.get('server_cpu_pct_per_process', '-')}; "
            f"{row['server_cpu_ms_per_stream_s']} ms CPU per stream-second; load "
            f"{row['load_1m_before']})"
        )
        if not row["ok"]:
            break
        max_ok = n
        if server.proc.poll() is not None:
            break
    return {
        "status": "measured",
        "protocol": {"encoding": "pcm16", "sample_rate": SR, "frame_s": FRAME_S, "hop_s": HOP_S, "window_s": WINDOW_S},
        "criterion": f"update latency p95 <= {LATENCY_BOUND_MS:g} ms, no dropped frames, real time kept",
        "levels": rows,
        "max_streams": max_ok,
        "stopped_at": rows[-1]["streams"] if rows and not rows[-1]["ok"] else None,
    }


# ---------------------------------------------------------------------------------------------------- report


def markdown(row: dict[str, Any]) -> str:
    inp, http, st = row["inprocess"], row["http"], row["streams"]
    lines = [
        f"{HEADING}\n",
        f"Machine: {row['machine']}. Date: {row['date']}. Produced by `benchmarks/serve.py` "
        f"({row['model']['description']}; real RAVDESS clips; client and server on the same machine).\n",
        f"In-process, one {inp['clip_s']} s clip ({inp['frames']} frames), 1 onnxruntime thread"
        + (f", pinned to CPU {inp['pinned_cpu']}" if inp["pinned_cpu"] is not None else "")
        + f", {inp['calls']} calls each:\n",
        "| path | p50 ms | p95 ms |",
        "|---|---|---|",
    ]
    names = {
        "predict": "`Predictor.predict` (features + ONNX)",
        "predict_with_decode": "FLAC decode + `Predictor.predict`",
        "features": "features only (log-mel + trim)",
        "onnx": "ONNX only",
    }
    for key, name in names.items():
        lines.append(f"| {name} | {inp[key]['p50_ms']} | {inp[key]['p95_ms']} |")
    lines += [
        "",
        f"Aim: <= {AIM_CLIP_P50_MS:g} ms p50 per 3 s clip in-process: "
        f"**{'met' if row['meets']['clip_p50'] else 'not met'}** ({row['clip_latency_ms_p50']} ms).\n",
        "`POST /v1/predict` (3 s FLAC, raw body; `ser serve` defaults: one inference thread per core; BLAS threads "
        f"{row['args']['server_blas_threads']}):\n",
        "| clients | requests | p50 ms | p95 ms | req / s | errors | server decode + inference p50 ms | server CPU % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for h in http:
        lines.append(
            f"| {h['concurrency']} | {h['requests']} | {h['p50_ms']} | {h['p95_ms']} | {h['throughput_rps']} | "
            f"{sum(h['errors'].values()) if h['errors'] else 0} | {h['server_processing_ms_p50']} | "
            f"{h['server_cpu_pct']} |"
        )
    lines.append("")
    if st.get("status") != "measured":
        lines.append(f"Real-time streams: not measured ({st.get('status')}).\n")
    else:
        procs = row["args"].get("processes", 1)
        lines += [
            f"`WS /v1/stream`: 20 ms PCM16 frames at real-time pace, hop {HOP_S:g} s, window {WINDOW_S:g} s, "
            f"{row['args']['level_s']:g} s per level; update latency = frame completing a hop sent → its partial "
            f"received. Server: `ser serve --processes {procs}`"
            + (" (CPU per worker process in brackets: how evenly the streams were spread)" if procs > 1 else "")
            + "; load = the machine's 1-minute load average before the level (other jobs share it).\n",
            "| streams | ok | update p50 ms | update p95 ms | server partial p95 ms | partials | errors / failed "
            "streams | real-time x | server CPU % | server CPU ms per stream-s | client CPU % | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in st["levels"]:
            per = r.get("server_cpu_pct_per_process")
            lines.append(
                f"| {r['streams']} | {'yes' if r['ok'] else 'no'} | {r['update_latency_ms_p50']} | "
                f"{r['update_latency_ms_p95']} | {r['server_partial_ms_p95']} | {r['partials_received']}/"
                f"{r['partials_expected']} | {sum(r['errors'].values())} / {r['failed_streams']} | "
                f"{r['realtime_factor']} | "
                f"{r['server_cpu_pct']}{f' ({per})' if per else ''} | {r.get('server_cpu_ms_per_stream_s')} | "
                f"{r['client_cpu_pct']} | "
                f"{r.get('load_1m_before')} |"
            )
        lines += [
            "",
            f"Concurrent real-time streams held (p95 <= {LATENCY_BOUND_MS:g} ms, nothing dropped): "
            f"**{row['max_streams']}**; aim >= {AIM_STREAMS}: **{'met' if row['meets']['streams'] else 'not met'}**."
            "\n",
        ]
        for i, rep in enumerate(st.get("repeats") or [], 2):
            lines.append(
                f"- ramp {i} (same server, right after): held **{rep['max_streams']}**"
                + (f", failed at {rep['stopped_at']}" if rep["stopped_at"] else "")
                + f" (load before its levels: {[r.get('load_1m_before') for r in rep['levels']]})"
            )
        if st.get("repeats"):
            lines.append("")
    if row.get("history"):
        lines.append("Earlier runs of this benchmark (kept in `serve.json` under `history`):\n")
        for h in row["history"]:
            lines.append(
                f"- {h['date']}, `--processes {h['processes']}`: held **{h['max_streams']}**"
                + (f", failed at {h['stopped_at']}" if h.get("stopped_at") else "")
                + (
                    f", {h['server_cpu_ms_per_stream_s']} ms server CPU per stream-second"
                    if h.get("server_cpu_ms_per_stream_s")
                    else ""
                )
                + (f". {h['note']}" if h.get("note") else "")
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="serving benchmark: in-process latency, HTTP, real-time streams")
    ap.add_argument("--model", type=Path, help="an exported model folder (default: build the cnn recipe, untrained)")
    ap.add_argument("--quick", action="store_true", help="smoke run: few calls, short levels; writes nothing")
    ap.add_argument("--write", action="store_true", help="with --quick: still write serve.json and RESULTS.md")
    ap.add_argument("--out", type=Path, default=RESULTS_JSON, help="results JSON path")
    ap.add_argument("--calls", type=int, help="in-process calls per path (default 300; quick 40)")
    ap.add_argument("--clips", type=int, default=48, help="real clips to use (spread over all actors)")
    ap.add_argument("--http-levels", default="1,4,16", help="concurrent HTTP clients per level")
    ap.add_argument("--http-requests", type=int, help="requests per HTTP level (default 200; quick 16)")
    ap.add_argument("--http-s", type=float, help="time limit per HTTP level, s (default 15; quick 4)")
    ap.add_argument("--levels", help="stream counts to ramp (default 10,25,50,100,150,200,300; quick 2,5)")
    ap.add_argument("--level-s", type=float, help="audio seconds per stream level (default 10; quick 3)")
    ap.add_argument("--max-streams", type=int, default=100_000, help="server's SER_MAX_STREAMS during the run")
    ap.add_argument("--processes", type=int, default=1, help="server worker processes (ser serve --processes)")
    ap.add_argument("--ramps", type=int, default=1, help="run the stream ramp this many times (reported each)")
    ap.add_argument(
        "--server-blas-threads",
        type=int,
        default=1,
        help="OMP/OPENBLAS/MKL_NUM_THREADS of the server, as in the service image (0: leave unset)",
    )
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: inprocess, http, streams")
    args = ap.parse_args(argv)
    q = args.quick
    calls = args.calls or (40 if q else 300)
    http_levels = [int(x) for x in args.http_levels.split(",") if x]
    http_requests = args.http_requests or (16 if q else 200)
    http_s = args.http_s or (4.0 if q else 15.0)
    levels = [int(x) for x in (args.levels or ("2,5" if q else "10,25,50,100,150,200,300")).split(",") if x]
    level_s = args.level_s or (3.0 if q else 10.0)
    skip = {s for s in args.skip.split(",") if s}
    write = (not q) or args.write
    t_all = time.perf_counter()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

    with tempfile.TemporaryDirectory(prefix="ser-bench-serve-") as tmp:
        tmp_path = Path(tmp)
        if args.model is not None:
            from ser.model_folder import check_model_dir, read_metadata

            model_dir = check_model_dir(args.model)
            meta = read_metadata(model_dir)
            model_info = {"source": str(model_dir), "name": meta.get("name"), "version": meta.get("version")}
            model_info["description"] = f"model {meta.get('name')} v{meta.get('version')}"
        else:
            log("building the cnn recipe (untrained weights: timing only) ...")
            model_dir, model_info = build_cnn_model(tmp_path / "model")
            model_info["description"] = f"cnn recipe, {model_info['n_params']} parameters, UNTRAINED weights"
        log(f"model: {model_info['description']}")
        clips = load_clips(args.clips)
        crops = [centre_crop(y, CLIP_S) for _, y in clips]
        blobs = [flac_bytes(y) for y in crops]
        stream_audio = (np.clip(np.concatenate([y for _, y in clips]), -1, 1) * 32767).astype("<i2")

        inproc: dict[str, Any] = {}
        if "inprocess" not in skip:
            log(f"(a) in-process: {calls} calls per path on {len(crops)} real 3 s clips ...")
            inproc = bench_inprocess(model_dir, crops, calls)
            for key in ("predict", "predict_with_decode", "features", "onnx"):
                log(f"  {key:<20} p50 {inproc[key]['p50_ms']} ms, p95 {inproc[key]['p95_ms']} ms")

        http: list[dict] = []
        streams: dict[str, Any] = {"status": "skipped"}
        if not {"http", "streams"} <= skip:
            server = start_server(model_dir, tmp_path, args.max_streams, args.server_blas_threads, args.processes)
            try:
                if "http" not in skip:
                    log(f"(b) HTTP POST /v1/predict, clients {http_levels} ...")
                    http = bench_http(server, blobs, http_levels, http_requests, http_s)
                if "streams" not in skip:
                    if stream_route_present(model_dir):
                        log(f"(c) WS /v1/stream, levels {levels}, {level_s:g} s each ...")
                        streams = bench_streams(server, stream_audio, levels, level_s)
                        streams["repeats"] = []
                        for k in range(args.ramps - 1):  # the same ramp again: how much the shared machine moved it
                            log(f"(c) ramp {k + 2} of {args.ramps} ...")
                            again = bench_streams(server, stream_audio, levels, level_s)
                            streams["repeats"].append({x: again[x] for x in ("max_streams", "stopped_at", "levels")})
                    else:
                        streams = {"status": "not run: this checkout has no WS /v1/stream route yet"}
                        log("NOTE: (c) not run: WS /v1/stream is not in src/ser/serve/app.py yet; rerun later.")
            finally:
                server.stop()

    row: dict[str, Any] = {
        "benchmark": "serve",
        "quick": q,
        "model": model_info,
        "clips": {"corpus": "ravdess (shared)", "n": len(clips), "crop_s": CLIP_S},
        "clip_latency_ms_p50": inproc.get("predict", {}).get("p50_ms"),
        "clip_latency_ms_p95": inproc.get("predict", {}).get("p95_ms"),
        "clip_latency_with_decode_ms_p50": inproc.get("predict_with_decode", {}).get("p50_ms"),
        "clip_latency_with_decode_ms_p95": inproc.get("predict_with_decode", {}).get("p95_ms"),
        "max_streams": streams.get("max_streams"),
        "inprocess": inproc,
        "http": http,
        "streams": streams,
        "aims": {"clip_latency_ms_p50_max": AIM_CLIP_P50_MS, "streams_min": AIM_STREAMS},
        "args": {
            "calls": calls,
            "http_levels": http_levels,
            "levels": levels,
            "level_s": level_s,
            "server_blas_threads": args.server_blas_threads or "unset",
            "processes": args.processes,
        },
        "load_average_before": [round(x, 2) for x in load_before] if load_before else None,
        "seconds": round(time.perf_counter() - t_all, 1),
        "machine": machine(),
        "date": dt.date.today().isoformat(),
    }
    p50 = row["clip_latency_ms_p50"]
    row["meets"] = {
        "clip_p50": p50 is not None and p50 <= AIM_CLIP_P50_MS,
        "streams": row["max_streams"] is not None and row["max_streams"] >= AIM_STREAMS,
    }
    if write and inproc and http:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(row, indent=2) + "\n")
        replace_section(HEADING, markdown(row))
        log(f"wrote {args.out} and the '{HEADING[3:]}' section of benchmarks/RESULTS.md")
    elif inproc and http:
        log("\n" + markdown(row))
        log("(quick run: nothing written; a full run without --quick writes serve.json and RESULTS.md)")
    else:
        log("(parts skipped: nothing written)")
    print(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
