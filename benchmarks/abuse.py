"""Abuse benchmark: what a hostile but fair client costs ``ser serve`` (issue 15), before and after its bounds.

Usage::

    .venv/bin/python benchmarks/abuse.py --label after                          # the code in src/
    git worktree add /tmp/base a9fb9d4
    .venv/bin/python benchmarks/abuse.py --label before --src /tmp/base/src     # the code at the merge base

Each case runs against a fresh ``ser serve`` subprocess (the code under ``--src``) on a free 127.0.0.1 port, with an
untrained exported model (the product's ``cnn`` architecture; predictions meaningless, costs real). Measured per
case: the server's **peak RSS growth** (``VmHWM`` in ``/proc/PID/status`` after the case minus ``VmRSS`` before it,
the peak reset with ``/proc/PID/clear_refs`` first), and the **event-loop stall**: a parallel client probes
``GET /healthz`` every 10 ms on a keep-alive connection during the case, p99 and max latency reported. Cases:

- ``bomb_predict``: a FLAC of silence declaring 655 350 Hz × 8 channels × 60 s (22 KB here; the client's was a
  343 KB libsndfile encoding of the same samples) on ``POST /v1/predict``;
- ``bomb_timeline``: the same for 120 s on ``POST /v1/timeline``;
- ``bomb_timeline_in_budget``: 48 kHz × 4 channels × 1800 s of silence on ``/v1/timeline``, the most the default
  bounds let through (345 M samples to decode);
- ``slow_body``: half of a 3 s clip's body, a stall of ``--stall-s`` seconds, then the rest;
- ``huge_header``: a request whose head holds a 64 MB header;
- ``tiny_step``: ``/v1/timeline?step_s=0.001`` on a 30-minute silent FLAC;
- ``timeouts_in_a_row``: three ``/v1/timeline`` requests in a row (48 kHz stereo, 1800 s of silence) against a
  server with ``SER_REQUEST_TIMEOUT_S=1``; also the server CPU seconds spent after the last answer (work that went
  on after its request was answered).

Every case is bounded in time; a case is skipped when the machine has less than ``--min-free-gb`` of memory
available. ``--label`` stores the run under ``before`` / ``after`` in ``benchmarks/results/abuse.json``; the
``Abuse`` section of ``benchmarks/RESULTS.md`` shows both runs once both exist. The helpers (bomb files, the server
process, the probe, raw-socket clients) are also used by ``tests/serve/test_abuse.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_JSON = HERE / "results" / "abuse.json"
HEADING = "## Abuse: resource bounds"

# ---------------------------------------------------------------------------------------------------- bomb files


def _crc8(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x8005) & 0xFFFF if c & 0x8000 else (c << 1) & 0xFFFF
        table.append(c)
    return table


_CRC16 = _crc16_table()


def _crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ b]
    return crc


def silent_flac(sr: int, channels: int, seconds: float, declared_frames: int | None = None) -> bytes:
    """A valid FLAC stream of digital silence (16-bit), written directly: a STREAMINFO block and frames of 65 535
    samples whose subframes are CONSTANT 0, so any rate up to 655 350 Hz and any length cost a few bytes per frame
    (a 655 350 Hz × 8 ch × 60 s file is 22 KB) and no encoding time. ``declared_frames`` overrides the header's
    total (0: unknown)."""
    block = 65535
    total = round(sr * seconds)
    declared = total if declared_frames is None else declared_frames
    bits = (sr << 44) | ((channels - 1) << 41) | (15 << 36) | declared
    info = struct.pack(">HH", block, block) + bytes(6) + bits.to_bytes(8, "big") + bytes(16)
    out = bytearray(b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info)
    if sr % 10 == 0 and sr // 10 < 65536:
        sr_code, sr_bytes = 0xE, struct.pack(">H", sr // 10)  # in tens of Hz
    else:
        sr_code, sr_bytes = 0xD, struct.pack(">H", sr)
    subframes = bytes(3) * channels  # per channel: CONSTANT subframe header, then the 16-bit value 0
    n = frame_no = 0
    while n < total:
        size = min(block, total - n)
        head = bytes([0xFF, 0xF8, 0x70 | sr_code, ((channels - 1) << 4) | 0x08])
        head += chr(frame_no).encode("utf-8", "surrogatepass") + struct.pack(">H", size - 1) + sr_bytes
        frame = head + bytes([_crc8(head)]) + subframes
        out += frame + struct.pack(">H", _crc16(frame))
        n += size
        frame_no += 1
    return bytes(out)


# ---------------------------------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (kB) of process ``pid``."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: int(m.group(1)) for k in ("VmRSS", "VmHWM") if (m := re.search(rf"{k}:\s+(\d+)", text))}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mem_available_gb() -> float:
    m = re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text())
    return int(m.group(1)) / 1024**2 if m else 0.0


@dataclass
class ServerProc:
    """``ser serve`` as a subprocess on 127.0.0.1 (``python -m ser serve --model DIR``, the code under ``src``)."""

    model_dir: Path
    src: Path = ROOT / "src"
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    proc: subprocess.Popen | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 120.0) -> ServerProc:
        """Launch the server and wait until it is ready."""
        return self.launch().wait_ready(timeout_s)

    def launch(self) -> ServerProc:
        """Launch the server (not waiting for it: :meth:`wait_ready`)."""
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
        env.update(self.env, PYTHONPATH=str(self.src), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        if self.log_path is None:
            self.log_path = Path(tempfile.mkstemp(prefix="ser-abuse-", suffix=".log")[1])
        cmd = [sys.executable, "-m", "ser", "serve", "--model", str(self.model_dir)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "info"]
        with self.log_path.open("w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.src.parent)
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> ServerProc:
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ser serve exited ({self.proc.returncode}):\n{self.log()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if request(self.port, "GET", "/readyz", timeout=2)[0] == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"ser serve not ready after {timeout_s:g} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def rss_mb(self) -> float:
        return proc_status(self.pid)["VmRSS"] / 1024

    def reset_peak(self) -> float:
        """Reset the peak RSS (``clear_refs``) and return the RSS now, MB."""
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        return self.rss_mb()

    def peak_mb(self) -> float:
        return proc_status(self.pid)["VmHWM"] / 1024

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def wait_idle(self, quiet_s: float = 1.0, max_s: float = 60.0) -> float:
        """Wait until the server used less than 5 % of a core over ``quiet_s``; returns the seconds waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < max_s:
            c0 = self.cpu()
            time.sleep(quiet_s)
            if self.cpu() - c0 < 0.05 * quiet_s:
                break
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


# ---------------------------------------------------------------------------------------------------- clients


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> tuple[int, bytes, float]:
    """One HTTP request on a new connection → ``(status, body, seconds)``."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, data, time.perf_counter() - t0
    finally:
        conn.close()


def post_audio(port: int, path: str, data: bytes, timeout: float = 120.0) -> tuple[int, bytes, float]:
    return request(port, "POST", path, data, {"content-type": "audio/flac"}, timeout)


def _read_status(sock: socket.socket, timeout: float) -> tuple[int | None, bytes]:
    """The status of the HTTP answer on ``sock`` (None when the server closed without one) and what was read."""
    sock.settimeout(timeout)
    buf = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
        if m:
            head, _, rest = buf.partition(b"\r\n\r\n")
            n = re.search(rb"(?i)content-length:\s*(\d+)", head)
            while n and len(rest) < int(n.group(1)):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            return int(m.group(1)), head + b"\r\n\r\n" + rest
    return None, buf


def slow_body(port: int, path: str, body: bytes, stall_s: float, answer_timeout: float = 120.0) -> dict[str, Any]:
    """Send the head and half of ``body``, stall ``stall_s`` (or until the server answers), then the rest →
    ``{"status", "answered_after_s", "answered_during_stall"}``."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/flac\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body[: len(body) // 2])
        sock.settimeout(stall_s)
        early = b""
        with contextlib.suppress(TimeoutError, OSError):
            early = sock.recv(65536)  # an answer during the stall (a body timeout), else a timeout here
        if early:
            rest = _read_status_from(early, sock, answer_timeout)
            return {"status": rest[0], "answered_after_s": time.perf_counter() - t0, "answered_during_stall": True}
        with contextlib.suppress(OSError):
            sock.sendall(body[len(body) // 2 :])
        status, _ = _read_status(sock, answer_timeout)
        return {"status": status, "answered_after_s": time.perf_counter() - t0, "answered_during_stall": False}


def _read_status_from(first: bytes, sock: socket.socket, timeout: float) -> tuple[int | None, bytes]:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", first)
    if m:
        return int(m.group(1)), first
    status, rest = _read_status(sock, timeout)
    return status, first + rest


def huge_header(port: int, size: int, timeout: float = 60.0) -> dict[str, Any]:
    """``GET /healthz`` with one ``X-Pad`` header of ``size`` bytes, sent as fast as the server reads it →
    ``{"status" (None: connection closed without an answer), "sent_bytes", "seconds"}``."""
    t0 = time.perf_counter()
    sent = 0
    status: int | None = None
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(timeout)
        chunk = b"a" * (1 << 20)
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
            while sent < size:
                n = min(len(chunk), size - sent)
                sock.sendall(chunk[:n])
                sent += n
            sock.sendall(b"\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: the answer (if any) is still readable
        status, _ = _read_status(sock, timeout)
    return {"status": status, "sent_bytes": sent, "seconds": time.perf_counter() - t0}


def disconnect_mid_upload(port: int, path: str, body: bytes) -> None:
    """Send the head and half of ``body``, then close the connection."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/flac\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body[: len(body) // 2])
        time.sleep(0.2)


class HealthProbe:
    """``GET /healthz`` every ``interval_s`` on a keep-alive connection, in a thread, while the ``with`` block
    runs; :meth:`summary` gives the latency p50 / p99 / max (ms), the count and the failures."""

    def __init__(self, port: int, interval_s: float = 0.01):
        self.port, self.interval_s = port, interval_s
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                conn.request("GET", "/healthz")
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    self.failures += 1
                self.latencies.append(time.perf_counter() - t0)
            except (OSError, http.client.HTTPException):
                self.failures += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self._stop.wait(self.interval_s)
        conn.close()

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=40)

    def summary(self) -> dict[str, Any]:
        lat = sorted(x * 1e3 for x in self.latencies)
        if not lat:
            return {"n": 0, "failures": self.failures}
        q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [lat[0]] * 99
        return {
            "n": len(lat),
            "p50_ms": round(q[49], 2),
            "p99_ms": round(q[98], 2),
            "max_ms": round(lat[-1], 2),
            "failures": self.failures,
        }


# ---------------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    run: Callable[[ServerProc, argparse.Namespace], dict[str, Any]]
    env: dict[str, str] = field(default_factory=dict)


def _answer(status: int, body: bytes, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"status": status, "seconds": round(seconds, 3), "response_bytes": len(body)}
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        err = json.loads(body).get("error")
        if err:
            out["error_code"] = err.get("code")
    return out


def _bomb(path: str, sr: int, ch: int, seconds: float) -> Callable[[ServerProc, argparse.Namespace], dict[str, Any]]:
    def run(server: ServerProc, args: argparse.Namespace) -> dict[str, Any]:
        data = silent_flac(sr, ch, seconds)
        return {"upload_bytes": len(data), **_answer(*post_audio(server.port, path, data, timeout=300))}

    return run


def _slow_body(server: ServerProc, args: argparse.Namespace) -> dict[str, Any]:
    body = clip_bytes()
    r = slow_body(server.port, "/v1/predict", body, args.stall_s)
    return {"stall_s": args.stall_s, **{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}}


def _huge_header(server: ServerProc, args: argparse.Namespace) -> dict[str, Any]:
    r = huge_header(server.port, 64 << 20)
    return {**r, "seconds": round(r["seconds"], 3)}


def _tiny_step(server: ServerProc, args: argparse.Namespace) -> dict[str, Any]:
    data = silent_flac(16000, 1, 1800)
    return _answer(*post_audio(server.port, "/v1/timeline?step_s=0.001", data, timeout=300))


def _timeouts(server: ServerProc, args: argparse.Namespace) -> dict[str, Any]:
    data = silent_flac(48000, 2, 1800)
    c0 = server.cpu()
    time.sleep(2.0)
    idle_rate = (server.cpu() - c0) / 2.0  # what the /healthz probe alone costs the server, CPU s per s
    answers = [_answer(*post_audio(server.port, "/v1/timeline", data, timeout=300)) for _ in range(3)]
    c0, t0 = server.cpu(), time.monotonic()
    while time.monotonic() - t0 < args.max_busy_s:  # until a 1 s window costs no more than the probe (+5 %)
        c1 = server.cpu()
        time.sleep(1.0)
        if server.cpu() - c1 <= idle_rate + 0.05:
            break
    elapsed = time.monotonic() - t0
    return {
        "statuses": [a["status"] for a in answers],
        "seconds": [a["seconds"] for a in answers],
        "cpu_s_after_last_answer": round(max(0.0, server.cpu() - c0 - idle_rate * elapsed), 2),
        "busy_s_after_last_answer": round(max(0.0, elapsed - 1.0), 1),
    }


CASES = [
    Case("bomb_predict", "FLAC 655 350 Hz × 8 ch × 60 s on /v1/predict", _bomb("/v1/predict", 655350, 8, 60)),
    Case("bomb_timeline", "FLAC 655 350 Hz × 8 ch × 120 s on /v1/timeline", _bomb("/v1/timeline", 655350, 8, 120)),
    Case(
        "bomb_timeline_in_budget",
        "FLAC 48 kHz × 4 ch × 1800 s on /v1/timeline (the most the default bounds allow)",
        _bomb("/v1/timeline", 48000, 4, 1800),
    ),
    Case("slow_body", "half a 3 s clip's body, a stall, then the rest (SER_BODY_TIMEOUT_S=5)", _slow_body),
    Case("huge_header", "a 64 MB request header", _huge_header),
    Case("tiny_step", "/v1/timeline?step_s=0.001 on 30 min of silence", _tiny_step),
    Case(
        "timeouts_in_a_row",
        "3 × /v1/timeline, 48 kHz stereo 1800 s, SER_REQUEST_TIMEOUT_S=1",
        _timeouts,
        {"SER_REQUEST_TIMEOUT_S": "1"},
    ),
]
COMMON_ENV = {"SER_BODY_TIMEOUT_S": "5"}  # the base code ignores variables it does not know


def clip_bytes() -> bytes:
    """A real 3 s RAVDESS clip when the shared data is there, else 3 s of a synthetic vowel (FLAC bytes)."""
    import io

    import numpy as np
    import soundfile as sf

    shared = Path(os.environ.get("SER_SHARED_DATA", ROOT.parent / "shared" / "data")) / "ravdess"
    clip = shared / "Actor_01" / "03-01-05-02-01-01-01.flac"
    if clip.is_file():
        return clip.read_bytes()
    t = np.arange(48000) / 16000
    y = sum(0.2 / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 8)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, y, 16000, format="FLAC")
    return buf.getvalue()


def run_case(case: Case, model_dir: Path, src: Path, args: argparse.Namespace) -> dict[str, Any]:
    free = mem_available_gb()
    if free < args.min_free_gb:
        return {"skipped": f"only {free:.1f} GB of memory available (need {args.min_free_gb:g})"}
    server = ServerProc(model_dir, src, {**COMMON_ENV, **case.env}).start()
    try:
        time.sleep(0.5)
        rss0 = server.reset_peak()
        with HealthProbe(server.port) as probe:
            t0 = time.perf_counter()
            result = case.run(server, args)
            wall = time.perf_counter() - t0
            time.sleep(0.5)
        server.wait_idle(quiet_s=0.5, max_s=60)
        peak = server.peak_mb()
        alive = server.proc is not None and server.proc.poll() is None
        return {
            **result,
            "wall_s": round(wall, 2),
            "rss_before_mb": round(rss0, 1),
            "peak_rss_growth_mb": round(peak - rss0, 1),
            "healthz": probe.summary(),
            "server_alive": alive,
            "tracebacks_in_log": server.log().count("Traceback"),
        }
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------- report


def _cell(run: dict[str, Any] | None, key: str) -> str:
    if run is None:
        return "-"
    if "skipped" in run:
        return "skipped"
    if key == "answer":
        if "statuses" in run:
            return " ".join(str(s) for s in run["statuses"])
        status = run.get("status")
        code = run.get("error_code")
        text = "closed" if status is None else str(status)
        return f"{text} {code}" if code else text
    if key == "healthz":
        h = run.get("healthz", {})
        return f"{h.get('p99_ms', '-')} / {h.get('max_ms', '-')}"
    return str(run.get(key, "-"))


def markdown(results: dict[str, Any]) -> str:
    runs = results.get("runs", {})
    before, after = runs.get("before", {}), runs.get("after", {})
    lines = [
        HEADING,
        "",
        "Produced by `benchmarks/abuse.py` (a fresh `ser serve` per case on 127.0.0.1, untrained `cnn` model; "
        "client and server on the same machine). Peak RSS growth: `VmHWM` after the case minus `VmRSS` before "
        "(peak reset first); stall: `GET /healthz` probed every 10 ms on a keep-alive connection during the case.",
        "",
    ]
    for label in ("before", "after"):
        meta = runs.get(label, {}).get("meta")
        if meta:
            lines.append(f"- **{label}**: {meta['code']}. Machine: {meta['machine']}. Date: {meta['date']}.")
    lines += [
        "",
        "| case | answer before | answer after | peak RSS growth MB before | after | /healthz p99 / max ms before "
        "| after | wall s before | after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in CASES:
        b, a = before.get("cases", {}).get(case.name), after.get("cases", {}).get(case.name)
        lines.append(
            f"| `{case.name}`: {case.what} | {_cell(b, 'answer')} | {_cell(a, 'answer')} "
            f"| {_cell(b, 'peak_rss_growth_mb')} | {_cell(a, 'peak_rss_growth_mb')} "
            f"| {_cell(b, 'healthz')} | {_cell(a, 'healthz')} | {_cell(b, 'wall_s')} | {_cell(a, 'wall_s')} |"
        )
    t_b = (before.get("cases", {}) or {}).get("timeouts_in_a_row") or {}
    t_a = (after.get("cases", {}) or {}).get("timeouts_in_a_row") or {}
    if t_b or t_a:
        lines += [
            "",
            "Work left running after three timed-out requests had been answered (server CPU seconds after the last "
            f"504): before {t_b.get('cpu_s_after_last_answer', '-')} s, after {t_a.get('cpu_s_after_last_answer', '-')}"
            " s.",
        ]
    s_b = (before.get("cases", {}) or {}).get("slow_body") or {}
    s_a = (after.get("cases", {}) or {}).get("slow_body") or {}
    if s_b or s_a:
        lines += [
            "",
            f"Slow body ({s_a.get('stall_s', s_b.get('stall_s', '-'))} s stall): before answered after "
            f"{s_b.get('answered_after_s', '-')} s (during the stall: {s_b.get('answered_during_stall', '-')}), "
            f"after {s_a.get('answered_after_s', '-')} s (during the stall: {s_a.get('answered_during_stall', '-')}).",
        ]
    step_b = (before.get("cases", {}) or {}).get("tiny_step") or {}
    if step_b.get("response_bytes"):
        lines += ["", f"Tiny step before: a JSON answer of {step_b['response_bytes'] / 1e6:.1f} MB."]
    lines += [
        "",
        "The bomb files are FLAC streams of silence written directly (22-48 KB; the client's 343 KB and 689 KB files "
        "were libsndfile encodings of the same samples, decoded to the same arrays). A short case gives the probe few "
        "samples (its p99 is then about its max). The 2 cores were shared with other jobs during both runs: times "
        "are indicative, memory and answers are not affected.",
    ]
    return "\n".join(lines) + "\n"


def machine() -> str:
    sys.path.insert(0, str(HERE))
    from _common import machine as common_machine

    return common_machine()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", choices=("before", "after"), default="after")
    ap.add_argument("--src", type=Path, default=ROOT / "src", help="the code to serve (PYTHONPATH of the server)")
    ap.add_argument("--cases", default=",".join(c.name for c in CASES), help="comma-separated case names")
    ap.add_argument("--stall-s", type=float, default=20.0, help="slow_body: seconds the body stalls")
    ap.add_argument("--max-busy-s", type=float, default=120.0, help="timeouts: longest wait for the server to idle")
    ap.add_argument("--min-free-gb", type=float, default=6.0, help="skip a case with less memory available")
    ap.add_argument("--out", type=Path, default=RESULTS_JSON)
    ap.add_argument("--no-write", action="store_true", help="print the results, write nothing")
    ap.add_argument("--render", action="store_true", help="only rewrite the RESULTS.md section from --out")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    if args.render:
        from _common import replace_section

        replace_section(HEADING, markdown(json.loads(args.out.read_text())))
        return

    from serve import build_cnn_model

    names = set(args.cases.split(","))
    src = args.src.resolve()
    code = subprocess.run(
        ["git", "-C", str(src), "log", "-1", "--format=%h"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True, text=True, check=False
    ).stdout.strip()
    meta = {
        "code": f"the code at `{code}`{' + uncommitted changes' if dirty else ''} (`{src}`)",
        "machine": machine(),
        "date": dt.date.today().isoformat(),
    }
    cases: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, _ = build_cnn_model(Path(tmp) / "model")
        for case in CASES:
            if case.name not in names:
                continue
            print(f"[{args.label}] {case.name}: {case.what}", flush=True)
            cases[case.name] = run_case(case, model_dir, src, args)
            print("   ", json.dumps(cases[case.name]), flush=True)
    if args.no_write:
        return
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.setdefault("runs", {})[args.label] = {"meta": meta, "cases": cases}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    from _common import replace_section

    replace_section(HEADING, markdown(results))
    print(f"wrote {args.out} and the '{HEADING[3:]}' section of benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
