"""What a hostile but fair client found (issue 15, resource bounds and honest accounting), reproduced and asserted:
decompression bombs (bounded from the header, decoded in blocks: a server's peak RSS measured), timeouts that stop
their work, slow bodies (408), huge headers, tiny timeline steps (422), a 401-digit WebSocket sample rate
(``bad_start``), client disconnects (499, no traceback), silence and clipping (no invented emotion), two files on
``/v1/predict`` (422). Property-based tests (hypothesis) of the bounded decoder and of the stream protocol.

The bomb files are FLAC streams of silence written directly (``benchmarks/abuse.py::silent_flac``): a file
declaring 655 350 Hz (the highest rate FLAC can state, which libsndfile accepts) × 8 channels × 60 s is 22 KB."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from ser.audio import UNBOUNDED, AudioLimitError, DecodeLimits, decode, load_audio, output_length
from ser.errors import AudioError, Cancelled
from ser.serve.engine import ModelHolder
from ser.serve.stream import StreamError, StreamSession, parse_start
from tests.conftest import ROOT, export_tiny_model, write_wav

RSS_LIMIT_MB = 300
"""Largest peak RSS growth of a server while it refuses or decodes the bombs (the same bombs took 1.4 and 3.4 GB
before the bounds)."""


def _load_kit():
    spec = importlib.util.spec_from_file_location("ser_abuse_kit", ROOT / "benchmarks" / "abuse.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


kit = _load_kit()
silent_flac = kit.silent_flac


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("abuse") / "m", "1")


def _wav(y: np.ndarray, sr: int = 16_000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def _error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code, err
    return err


def _metric(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


# ------------------------------------------------------------------------------------------------ the decoder


def test_bomb_is_refused_from_its_header_in_milliseconds():
    bomb = silent_flac(655_350, 8, 60)
    assert len(bomb) < 30_000
    info = sf.info(io.BytesIO(bomb))  # libsndfile takes FLAC's highest rate
    assert (info.samplerate, info.channels, info.frames) == (655_350, 8, 655_350 * 60)
    t0 = time.perf_counter()
    with pytest.raises(AudioLimitError, match="655350 Hz") as exc:
        decode(io.BytesIO(bomb), limits=DecodeLimits(max_s=60))
    assert exc.value.code == "audio_too_large" and time.perf_counter() - t0 < 0.5
    cases = {  # limits → (code, message part)
        DecodeLimits(max_s=60, max_sample_rate=None, max_channels=4): ("audio_too_large", "8 channels"),
        DecodeLimits(max_s=30, max_sample_rate=None): ("audio_too_long", "60.0 s"),
        DecodeLimits(max_s=60, max_sample_rate=None, max_samples=10**8): ("audio_too_large", "samples to decode"),
    }
    for limits, (code, part) in cases.items():
        with pytest.raises(AudioLimitError, match=part) as exc:
            decode(io.BytesIO(bomb), limits=limits)
        assert exc.value.code == code


def test_block_decoding_is_exact():
    """Blocks, per-block downmix and streaming resampling give the samples of the whole-file decode."""
    rng = np.random.default_rng(0)
    for sr, ch, n in [(48_000, 2, 100_000), (44_100, 1, 77_777), (8_000, 3, 9_000), (16_000, 2, 30_000)]:
        data = _wav((0.3 * rng.standard_normal((n, ch))).astype(np.float32), sr, "FLOAT")
        whole = load_audio(io.BytesIO(data))
        for block in (1, 333, 65_536):
            if block == 1 and n > 10_000:
                continue
            out = decode(io.BytesIO(data), block_frames=block)
            assert out.audio.dtype == np.float32 and np.array_equal(out.audio, whole)
            assert out.frames == n and out.audio.size == output_length(n, sr, 16_000)


def test_decoding_memory_follows_the_result():
    """48 kHz × 8 ch × 60 s: the whole-file decode holds 92 MB of float32 at once; the block decoder holds the
    16 kHz mono result (3.8 MB) and a few blocks."""
    import tracemalloc

    data = silent_flac(48_000, 8, 60)
    tracemalloc.start()
    try:
        out = decode(io.BytesIO(data), limits=DecodeLimits(max_s=60))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.audio.size == 16_000 * 60
    assert peak < out.audio.nbytes + 12 * 2**20, peak / 2**20


def test_decoding_stops_when_asked():
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        decode(io.BytesIO(silent_flac(48_000, 2, 60)), should_stop=should_stop, block_frames=4096)
    assert len(calls) == 3  # two blocks decoded, then stopped


def test_header_without_a_length_is_an_audio_error():
    with pytest.raises(AudioError):  # libsndfile cannot read it block by block; a clean refusal, not a crash
        decode(io.BytesIO(silent_flac(16_000, 1, 5, declared_frames=0)), limits=DecodeLimits(max_s=60))


_SUBTYPES = {"WAV": ["PCM_16", "PCM_24", "PCM_U8", "FLOAT", "DOUBLE", "ULAW"], "FLAC": ["PCM_16", "PCM_24", "PCM_S8"]}


@st.composite
def audio_bytes(draw) -> tuple[bytes, int | None]:
    """A file soundfile writes (any rate, channels, length, subtype; NaN / huge values in float ones), possibly
    truncated or with bytes overwritten, or random bytes behind a RIFF / fLaC magic → ``(data, frames written or
    None when mutated / garbage)``."""
    kind = draw(st.sampled_from(["file", "file", "mutated", "garbage"]))
    if kind == "garbage":
        magic = draw(st.sampled_from([b"", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"fLaC", b"OggS"]))
        return magic + draw(st.binary(max_size=512)), None
    fmt = draw(st.sampled_from(sorted(_SUBTYPES)))
    subtype = draw(st.sampled_from(_SUBTYPES[fmt]))
    sr = draw(st.integers(1, 655_350 if fmt == "FLAC" else 2_000_000))
    ch = draw(st.integers(1, 8 if fmt == "FLAC" else 12))
    n = draw(st.integers(0, 3000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.0, 0.3, 1.0, 1e30] if subtype in ("FLOAT", "DOUBLE") else [0.0, 0.3, 1.0]))
    y = (scale * rng.standard_normal((n, ch))).astype(np.float32)  # (libsndfile's u-law *writer* crashes on 1e30)
    if n and subtype in ("FLOAT", "DOUBLE") and draw(st.booleans()):
        y[rng.integers(0, n), rng.integers(0, ch)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    buf = io.BytesIO()
    try:
        sf.write(buf, y, sr, format=fmt, subtype=subtype)
    except Exception:  # a combination libsndfile will not write
        return draw(st.binary(max_size=64)), None
    data = buf.getvalue()
    if kind == "file":
        return data, n
    cut = draw(st.integers(0, len(data)))
    data = bytearray(data[:cut] if draw(st.booleans()) else data)
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data), None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(audio_bytes())
def test_decoder_property(case):
    """Whatever the bytes: an AudioError, or 1-D finite float32 at 16 kHz with the length its frames make."""
    data, frames = case
    limits = DecodeLimits(max_s=2.0)
    try:
        out = decode(io.BytesIO(data), 16_000, limits)
    except AudioError:
        return
    rate = out.info.sample_rate
    assert out.sample_rate == 16_000 and out.audio.ndim == 1 and out.audio.dtype == np.float32
    assert np.all(np.isfinite(out.audio))
    assert out.audio.size == output_length(out.frames, rate, 16_000)
    assert 0 < out.frames <= 2.0 * rate + 1 and 1000 <= rate <= 192_000 and out.info.channels <= 8
    assert 0.0 <= out.clipped <= 1.0
    if frames is not None:
        assert out.frames == frames


# ------------------------------------------------------------------------------------------------ the stream protocol

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**1000), 10**1000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json = st.recursive(
    _json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8
)
_number_like = (
    st.integers(-(10**500), 10**500) | st.floats() | st.sampled_from([16000, 8000, 48000, 0.5, 2.0, 10**400]) | _json
)
_start = st.fixed_dictionaries(
    {"type": st.just("start")},
    optional={
        "sample_rate": _number_like,
        "encoding": st.sampled_from(["pcm16", "float32"]) | _json,
        "hop_s": _number_like,
        "window_s": _number_like,
    },
)


@settings(max_examples=300, deadline=None)
@given(_start)
def test_parse_start_property(msg):
    """Any JSON ``start`` message is a StreamConfig or a StreamError ``bad_start``, never another exception."""
    try:
        cfg = parse_start(msg)
    except StreamError as exc:
        assert exc.code == "bad_start" and len(exc.message) < 300
        return
    assert 8000 <= cfg.sample_rate <= 48000 and cfg.encoding in ("pcm16", "float32")


class _FakePredictor:
    def __init__(self) -> None:
        self.labels, self.version, self.sample_rate = ["a", "b"], "0", 16_000

    def predict_proba(self, audio):
        return np.array([0.5, 0.5])


@settings(max_examples=300, deadline=None)
@given(_start | _json | st.text(max_size=200))
def test_session_text_messages_property(msg):
    """Any text message (JSON or not) gets a list of messages back; a session never raises."""
    text = msg if isinstance(msg, str) else json.dumps(msg)
    session = StreamSession(_FakePredictor)
    out = session.on_text(text)
    assert isinstance(out, list) and all(m["type"] in ("ready", "error", "done", "final") for m in out)
    assert session.on_text('{"type": "start", "sample_rate": 16000}')[0]["type"] in ("ready", "error")


def test_websocket_huge_integer_rate_is_bad_start_and_the_stream_goes_on(make_client):
    c = make_client()
    with c.websocket_connect("/v1/stream") as ws:
        ws.send_text('{"type": "start", "sample_rate": 1' + "0" * 400 + "}")
        err = ws.receive_json()
        assert err["type"] == "error" and err["code"] == "bad_start" and "sample_rate" in err["message"]
        ws.send_text('{"type": "start", "sample_rate": 16000}')
        assert ws.receive_json()["type"] == "ready"
        ws.send_text('{"type": "end"}')
        assert ws.receive_json()["type"] == "done"


# ------------------------------------------------------------------------------------------------ the API in-process


def test_bombs_and_bounds_are_422(make_client):
    c = make_client()
    bomb = silent_flac(655_350, 8, 60)
    for path in ("/v1/predict", "/v1/timeline"):
        err = _error(c.post(path, content=bomb, headers={"content-type": "audio/flac"}), 422, "audio_too_large")
        assert "655350 Hz" in err["message"]
    batch = c.post("/v1/predict/batch", files=[("files", ("b.flac", bomb)), ("files", ("s.flac", bomb[:10]))])
    assert [i["error"]["code"] for i in batch.json()["results"]] == ["audio_too_large", "undecodable_audio"]
    nine = _wav(np.zeros((16_000, 9), np.float32))
    _error(c.post("/v1/predict", content=nine, headers={"content-type": "audio/wav"}), 422, "audio_too_large")
    big = silent_flac(192_000, 2, 60)  # 23 M samples: over 60 s × 192 000 per s
    err = _error(c.post("/v1/predict", content=big, headers={"content-type": "audio/flac"}), 422, "audio_too_large")
    assert "samples to decode" in err["message"]
    ok = c.post("/v1/predict", content=silent_flac(96_000, 2, 60), headers={"content-type": "audio/flac"})
    assert ok.status_code == 200 and ok.json()["speech"] is False


def test_two_files_on_predict_are_refused(make_client):
    c = make_client()
    one = _wav(np.zeros(16_000, np.float32))
    err = _error(
        c.post("/v1/predict", files=[("file", ("a.wav", one)), ("file", ("b.wav", one))]), 422, "too_many_files"
    )
    assert "batch" in err["message"]
    assert c.post("/v1/predict", files=[("file", ("a.wav", one))]).status_code == 200


def _square(seconds: float, sr: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return np.sign(np.sin(2 * np.pi * 150 * t)).astype(np.float32)


def test_silence_and_clipping_get_no_emotion(make_client, tmp_path, run_cli, model_dir):
    c = make_client()
    cases = {
        "zeros": (_wav(np.zeros(48_000, np.float32)), "no_speech"),
        "hiss": (_wav((1e-4 * np.random.default_rng(0).standard_normal(48_000)).astype(np.float32)), "no_speech"),
        "clipped": (_wav(_square(3.0)), "clipped"),
    }
    for name, (data, reason) in cases.items():
        r = c.post("/v1/predict", files={"file": (f"{name}.wav", data)})
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["speech"] is False and d["reason"] == reason, (name, d)
        assert d["label"] is None and d["confidence"] is None and d["probabilities"] is None
        assert d["duration_s"] == pytest.approx(3.0) and d["model_version"] == "1"
    batch = c.post("/v1/predict/batch", files=[("files", ("z.wav", cases["zeros"][0]))]).json()
    assert batch["results"][0]["ok"] and batch["results"][0]["result"]["reason"] == "no_speech"
    metrics = c.get("/metrics").text
    assert _metric(metrics, "ser_no_speech_total", endpoint="predict", reason="no_speech") == 2
    assert _metric(metrics, "ser_no_speech_total", endpoint="predict", reason="clipped") == 1
    assert _metric(metrics, "ser_predictions_total", endpoint="predict") == 0
    schema = c.get("/openapi.json").json()["components"]["schemas"]["PredictionOut"]["properties"]
    assert "no speech" in schema["label"]["description"] and "no_speech" in schema["reason"]["description"]

    zeros = write_wav(tmp_path / "zeros.wav", np.zeros(48_000, np.float32))
    code, out, _ = run_cli("predict", zeros, "--model", model_dir, "--json")
    assert code == 0
    row = json.loads(out)[0]
    assert row["ok"] and row["speech"] is False and row["reason"] == "no_speech" and row["label"] is None
    code, out, _ = run_cli("predict", zeros, "--model", model_dir)
    assert code == 0 and "no speech" in out


@pytest.mark.shared_data
def test_real_speech_keeps_its_label(make_client, holder, ravdess_dir):
    """Real clips (quiet actors 9 and 20 included, whose speech is below the timeline's -50 dBFS gate) get
    ``speech: true`` and the very probabilities the service gave before the gate and the block decoder."""
    c = make_client()
    clips = [sorted((ravdess_dir / f"Actor_{a:02d}").glob("*.flac"))[i] for a in (1, 9, 12, 20, 24) for i in (0, 31)]
    for clip in clips:
        d = c.post("/v1/predict", files={"file": (clip.name, clip.read_bytes())}).json()
        assert d["speech"] is True and d["reason"] is None and d["label"] in d["probabilities"], (clip, d)
        before = holder.predictor.predict_proba(load_audio(clip))
        assert list(d["probabilities"].values()) == pytest.approx(list(before), abs=1e-9)
        assert d["confidence"] == pytest.approx(float(before.max()), abs=1e-9)


def test_timeline_step_floor_and_point_cap(make_client):
    c = make_client()
    long_silence = silent_flac(16_000, 1, 1800)
    err = _error(
        c.post("/v1/timeline?step_s=0.001", content=long_silence, headers={"content-type": "audio/flac"}),
        422,
        "step_too_small",
    )
    assert "0.1" in err["message"]
    capped = make_client(min_timeline_step_s=0.001, max_timeline_points=1000)
    t0 = time.perf_counter()
    r = capped.post("/v1/timeline?step_s=0.01", content=long_silence, headers={"content-type": "audio/flac"})
    err = _error(r, 422, "too_many_points")
    assert "180000 timeline points" in err["message"] and "step_s >= 1.8" in err["message"]
    assert time.perf_counter() - t0 < 1.0  # from the header, before decoding
    ok = c.post("/v1/timeline?step_s=0.1", content=silent_flac(16_000, 1, 60), headers={"content-type": "audio/flac"})
    assert ok.status_code == 200 and len(ok.json()["timeline"]["times_s"]) == 600


class _Slow:
    """A predictor whose model call sleeps ``delay`` s (ignoring any stop request) and counts its calls."""

    def __init__(self, inner, delay: float):
        self._inner, self._delay, self.calls = inner, delay, 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def predict_proba(self, audio):
        self.calls += 1
        time.sleep(self._delay)
        return self._inner.predict_proba(audio)


def _voiced_recording(n_segments: int, sr: int = 16_000) -> bytes:
    t = np.arange(int(1.0 * sr)) / sr
    vowel = sum(0.2 / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 8)).astype(np.float32)
    gap = np.zeros(int(0.6 * sr), np.float32)
    return _wav(np.concatenate([np.concatenate([vowel, gap]) for _ in range(n_segments)]))


def test_timeout_stops_the_work_and_holds_the_limiter(make_client, holder):
    """A timed-out request's work stops at its next check (no model call after the 504), and its limiter slot is
    held until its thread has returned (a model call that ignores the stop is waited for)."""
    slow = _Slow(holder.predictor, delay=0.3)
    h = ModelHolder(holder.model_dir, loader=lambda path, threads: slow)
    h.reload()
    c = make_client(holder_=h, request_timeout_s=0.5)
    r = c.post("/v1/timeline", files={"file": ("rec.wav", _voiced_recording(12))})
    _error(r, 504, "timeout")
    calls = slow.calls
    assert 1 <= calls <= 3  # 12 segments, stopped after the deadline
    assert c.app.state.limiter.borrowed_tokens == 0
    time.sleep(0.8)
    assert slow.calls == calls  # nothing ran on after the answer

    slow1 = _Slow(holder.predictor, delay=1.0)
    h1 = ModelHolder(holder.model_dir, loader=lambda path, threads: slow1)
    h1.reload()
    c1 = make_client(holder_=h1, request_timeout_s=0.2)
    t0 = time.perf_counter()
    _error(c1.post("/v1/predict", files={"file": ("v.wav", _voiced_recording(2))}), 504, "timeout")
    assert time.perf_counter() - t0 >= 0.95 and slow1.calls == 1  # waited for the thread, then answered
    assert c1.app.state.limiter.borrowed_tokens == 0


def test_client_disconnect_is_499_without_a_traceback(make_client, caplog):
    c = make_client()
    app = c.app
    body = _wav(np.zeros(16_000, np.float32))
    messages = [
        {"type": "http.request", "body": body[:1000], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/predict",
        "raw_path": b"/v1/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"audio/wav"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "state": {},
        "app": app,
    }
    with caplog.at_level(logging.INFO):
        asyncio.run(app(scope, receive, send))
    metrics = c.get("/metrics").text
    assert _metric(metrics, "ser_http_requests_total", route="/v1/predict", status="499") == 1
    assert _metric(metrics, "ser_http_requests_total", status="500") == 0
    lines = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert not any(r.exc_info for r in caplog.records)


# ------------------------------------------------------------------------------------------------ real servers


@pytest.fixture(scope="module")
def servers(model_dir, tmp_path_factory):
    """Two ``ser serve`` subprocesses on free loopback ports: ``main`` (30-min timeline limit lowered to 600 s,
    body timeout 1.5 s) and ``strict`` (request timeout 1 s)."""
    logs = tmp_path_factory.mktemp("logs")
    main = kit.ServerProc(
        model_dir,
        ROOT / "src",
        {"SER_MAX_TIMELINE_AUDIO_S": "600", "SER_BODY_TIMEOUT_S": "1.5"},
        logs / "main.log",
    )
    strict = kit.ServerProc(model_dir, ROOT / "src", {"SER_REQUEST_TIMEOUT_S": "1"}, logs / "strict.log")
    started = [main.launch(), strict.launch()]
    try:
        for s in started:
            s.wait_ready(120)
        yield {"main": main, "strict": strict}
    finally:
        for s in started:
            s.stop()


def test_bombs_keep_the_servers_peak_rss_bounded(servers):
    """The issue's bombs (655 350 Hz × 8 ch, 60 s on predict, 120 s on timeline: 1.4 and 3.4 GB before) and the
    largest inputs the bounds let through (96 kHz stereo × 60 s on predict; 48 kHz × 4 ch × 600 s on timeline, a
    460 MB float32 array decoded whole) raise the server's peak RSS by less than RSS_LIMIT_MB."""
    s = servers["main"]
    rss0 = s.reset_peak()
    for path, (sr, ch, sec), status in [
        ("/v1/predict", (655_350, 8, 60), 422),
        ("/v1/timeline", (655_350, 8, 120), 422),
        ("/v1/predict", (96_000, 2, 60), 200),
        ("/v1/timeline", (48_000, 4, 600), 200),
    ]:
        code, body, _ = kit.post_audio(s.port, path, silent_flac(sr, ch, sec))
        assert code == status, body[:300]
    growth = s.peak_mb() - rss0
    assert growth < RSS_LIMIT_MB, f"peak RSS grew by {growth:.0f} MB"


def test_slow_body_is_408(servers):
    s = servers["main"]
    r = kit.slow_body(s.port, "/v1/predict", _wav(np.zeros(48_000, np.float32)), stall_s=10)
    assert r["status"] == 408 and r["answered_during_stall"] and 1.4 <= r["answered_after_s"] < 5


def test_huge_header_is_refused_and_does_not_stall(servers):
    s = servers["main"]
    with kit.HealthProbe(s.port) as probe:
        time.sleep(0.2)
        r = kit.huge_header(s.port, 64 << 20)
        time.sleep(0.3)
    assert r["status"] in (400, 431, None) and r["sent_bytes"] < 64 << 20
    h = probe.summary()
    assert h["failures"] == 0 and h["max_ms"] < 500, h
    assert kit.request(s.port, "GET", "/healthz")[0] == 200


def test_client_disconnect_on_a_real_server(servers):
    s = servers["main"]
    kit.disconnect_mid_upload(s.port, "/v1/predict", _wav(np.zeros(160_000, np.float32)))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        metrics = kit.request(s.port, "GET", "/metrics")[1].decode()
        if _metric(metrics, "ser_http_requests_total", route="/v1/predict", status="499"):
            break
        time.sleep(0.1)
    assert _metric(metrics, "ser_http_requests_total", route="/v1/predict", status="499") == 1
    assert _metric(metrics, "ser_http_requests_total", status="500") == 0
    log = s.log()
    assert log.count("client disconnected before its request was read") == 1 and "Traceback" not in log


def test_timeouts_stop_their_work_on_a_real_server(servers):
    """Three requests timed out in a row (each would decode 30 min of 48 kHz stereo): each is answered 504 after
    about 1 s, the server does no more work once the last is answered, and its memory stays bounded."""
    s = servers["strict"]
    data = silent_flac(48_000, 2, 1800)
    rss0 = s.reset_peak()
    for _ in range(3):
        code, body, seconds = kit.post_audio(s.port, "/v1/timeline", data)
        assert code == 504 and json.loads(body)["error"]["code"] == "timeout" and seconds < 3
    c0 = s.cpu()
    time.sleep(1.5)
    assert s.cpu() - c0 < 0.2  # idle: no abandoned decoding left running
    assert s.peak_mb() - rss0 < RSS_LIMIT_MB
    assert "Traceback" not in s.log()


def test_websocket_on_a_real_server(servers):
    """The stream still works behind the h11 parser, and a 401-digit sample rate is ``bad_start``."""
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{servers['main'].port}/v1/stream", open_timeout=10) as ws:
        ws.send('{"type": "start", "sample_rate": 1' + "0" * 400 + "}")
        assert json.loads(ws.recv(timeout=10))["code"] == "bad_start"
        ws.send('{"type": "start", "sample_rate": 16000}')
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        ws.send('{"type": "end"}')
        assert json.loads(ws.recv(timeout=10))["type"] == "done"


def test_serve_uses_a_bounded_header_parser(model_dir, monkeypatch, run_cli):
    """``ser serve`` runs uvicorn's h11 parser with the header limit (httptools has none)."""
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    monkeypatch.setenv("SER_MAX_HEADER_BYTES", "20000")
    code, _, err = run_cli("serve", "--model", model_dir, "--port", "1")
    assert code == 0, err
    assert seen["http"] == "h11" and seen["h11_max_incomplete_event_size"] == 20000


def test_unbounded_limits_for_local_files(tmp_path):
    path = tmp_path / "hi.wav"
    sf.write(path, np.zeros((100, 10), np.float32), 384_000)
    assert decode(path, 16_000, UNBOUNDED).audio.size == output_length(100, 384_000, 16_000)
    with pytest.raises(AudioLimitError):
        decode(path, 16_000)
