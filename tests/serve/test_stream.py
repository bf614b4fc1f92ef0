"""Real-time streaming: the session logic on signals made by code (VAD gating, utterance finals, encodings,
resampling, frame sizes, every malformed input), the ``WS /v1/stream`` protocol through Starlette's TestClient on a
real RAVDESS clip, API keys, metrics, an abrupt disconnect on a real uvicorn server, and ``ser listen --file``."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from ser.errors import SerError
from ser.serve import stream as S
from ser.serve.app import create_app
from ser.serve.engine import ModelHolder
from ser.serve.settings import Settings
from tests.conftest import RAVDESS8, export_tiny_model

SR = 16_000
LABELS = RAVDESS8
CLIP = "03-01-05-02-01-01-01.flac"  # Actor_01, angry, statement 1: 4.1 s, voice from about 1.0 to 3.1 s


# ------------------------------------------------------------------------------------------------ signals and models


def voice(seconds: float, f0: float = 140.0, amp: float = 0.3, sr: int = SR) -> np.ndarray:
    """A speech-like burst webrtcvad accepts: 19 harmonics of a vibrato f0, amplitude-modulated at 4 Hz."""
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))) / sr
    y = sum(amp / k * np.sin(k * phase) for k in range(1, 20) if k * f0 < sr / 2)
    return (y * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def silence(seconds: float, sr: int = SR) -> np.ndarray:
    return np.zeros(int(seconds * sr), dtype=np.float32)


def quantize(y: np.ndarray) -> np.ndarray:
    """``y`` on the PCM16 grid (so its PCM16 and float32 encodings carry the same numbers)."""
    return (np.clip(np.round(y * 32768.0), -32768, 32767) / 32768.0).astype(np.float32)


class FakePredictor:
    """A deterministic stand-in for :class:`ser.inference.Predictor`: 'angry' when the strongest frequency is above
    200 Hz (a high-pitched burst), else 'neutral'; records the length of every clip it is asked about."""

    labels = LABELS
    version = "fake-1"
    name = "fake"

    def __init__(self, sample_rate: int = SR, delay_s: float = 0.0):
        self.sample_rate, self.delay_s = sample_rate, delay_s
        self.calls: list[int] = []

    def predict_proba(self, audio: np.ndarray) -> np.ndarray:
        self.calls.append(int(audio.size))
        if self.delay_s:
            time.sleep(self.delay_s)
        peak_hz = np.argmax(np.abs(np.fft.rfft(audio))) * self.sample_rate / audio.size
        p = np.full(len(LABELS), 0.02)
        p[LABELS.index("angry" if peak_hz > 200 else "neutral")] = 1.0
        return p / p.sum()


def _export(path: Path, version: str) -> Path:
    return export_tiny_model(path, version)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("stream") / "m", "1")


@pytest.fixture(scope="module")
def clip(ravdess_dir) -> np.ndarray:
    y, sr = sf.read(ravdess_dir / "Actor_01" / CLIP, dtype="float32")
    assert sr == SR and y.ndim == 1
    return y


def run_session(
    signal: np.ndarray,
    predictor=None,
    *,
    sr: int = SR,
    encoding: str = "pcm16",
    frame_s: float = 0.02,
    limits: S.StreamLimits | None = None,
    **start,
) -> list[dict]:
    """Stream ``signal`` through a session in ``frame_s`` frames, then end it → every message it sent."""
    predictor = predictor or FakePredictor()
    s = S.StreamSession(lambda: predictor, limits)
    out = s.handle(json.dumps({"type": "start", "sample_rate": sr, "encoding": encoding, **start}))
    assert out[0]["type"] == "ready", out
    n = max(1, round(frame_s * sr))
    for i in range(0, signal.size, n):
        out += s.handle(S.encode_frame(signal[i : i + n], encoding))
    out += s.handle('{"type": "end"}')
    assert s.close == S.Close(1000, "done")
    return out


VARYING = ("latency_ms", "prediction_id")
"""Message fields that differ between two runs of the same stream (timing; each final's new id)."""


def of_type(messages: list[dict], kind: str) -> list[dict]:
    return [m for m in messages if m["type"] == kind]


# ------------------------------------------------------------------------------------------------ pure parts


def test_parse_start_defaults_and_bounds():
    cfg = S.parse_start({"type": "start", "sample_rate": 44100})
    assert cfg == S.StreamConfig(44100, "pcm16", 0.5, 2.0)
    assert S.parse_start({"sample_rate": 8000.0, "encoding": "float32", "hop_s": 0.1, "window_s": 10}).window_s == 10
    bad = [
        {},
        {"sample_rate": "16000"},
        {"sample_rate": True},
        {"sample_rate": 7999},
        {"sample_rate": 48001},
        {"sample_rate": 16000.5},
        {"sample_rate": 16000, "encoding": "mp3"},
        {"sample_rate": 16000, "encoding": None},
        {"sample_rate": 16000, "hop_s": 0.01},
        {"sample_rate": 16000, "hop_s": 60},
        {"sample_rate": 16000, "window_s": 0.2},
        {"sample_rate": 16000, "window_s": 11},
        {"sample_rate": 16000, "hop_s": 2.0, "window_s": 1.0},
        {"sample_rate": 16000, "hop_s": None},
    ]
    for msg in bad:
        with pytest.raises(S.StreamError) as exc:
            S.parse_start(msg)
        assert exc.value.code == "bad_start" and exc.value.message, msg


def test_decode_and_encode_frames():
    y = quantize(np.linspace(-1, 1, 101, dtype=np.float32))
    np.testing.assert_array_equal(S.decode_frame(S.encode_frame(y, "pcm16"), "pcm16"), y)
    np.testing.assert_array_equal(S.decode_frame(S.encode_frame(y, "float32"), "float32"), y)
    assert S.decode_frame(b"\x00\x80\xff\x7f", "pcm16").tolist() == [-1.0, 32767 / 32768]
    for data, enc, code in [
        (b"\x00\x00\x01", "pcm16", "bad_frame"),
        (b"\x00" * 6, "float32", "bad_frame"),
        (np.array([0.1, np.nan], "<f4").tobytes(), "float32", "invalid_audio"),
        (np.array([np.inf], "<f4").tobytes(), "float32", "invalid_audio"),
    ]:
        with pytest.raises(S.StreamError) as exc:
            S.decode_frame(data, enc)
        assert exc.value.code == code


def test_sample_buffer_keeps_absolute_indices():
    b = S.SampleBuffer(capacity=16)
    x = np.arange(1000, dtype=np.float32)
    for i in range(0, 1000, 7):
        b.append(x[i : i + 7])
        b.drop_before(b.end - 50)
    assert b.end == 1000 and len(b) == 50 and b.start == 950
    np.testing.assert_array_equal(b.slice(960, 970), x[960:970])
    np.testing.assert_array_equal(b.slice(0, 955), x[950:955])  # clipped to what is kept
    assert b.slice(990, 2000).size == 10 and b.slice(2000, 3000).size == 0


def test_endpointer():
    def run(flags: str, **kw) -> list[tuple[int, int]]:
        ep = S.Endpointer(**{"end_silence": 3, "min_frames": 2, "max_frames": 100, **kw})
        segs = [ep.push(c == "1") for c in flags] + [ep.flush()]
        return [s for s in segs if s is not None]

    assert run("0000") == []
    assert run("0011100000") == [(2, 5)]
    assert run("0011001100000") == [(2, 8)]  # a 2-frame pause is bridged
    assert run("001100011000") == [(2, 4), (7, 9)]  # a 3-frame pause ends the utterance
    assert run("0010000") == []  # one voiced frame is too short
    assert run("000111") == [(3, 6)]  # the end of the stream closes it
    assert run("1" * 9, max_frames=4) == [(0, 4), (4, 8)]  # cut at max_frames; the 1-frame rest is too short


# ------------------------------------------------------------------------------------------------ session on signals


def test_silence_gives_voiceless_partials_and_no_finals():
    fake = FakePredictor()
    out = run_session(silence(5.0), fake)
    partials = of_type(out, "partial")
    assert [p["t"] for p in partials] == pytest.approx(np.arange(1, 11) * 0.5)
    assert all(not p["voiced"] and p["label"] is None and p["probabilities"] is None for p in partials)
    assert of_type(out, "final") == [] and out[-1] == {"type": "done", "utterances": 0}
    assert fake.calls == []  # unvoiced windows are not classified at all
    assert of_type(out, "error") == []


def test_bursts_separated_by_silence_give_one_final_each():
    y = np.concatenate(
        [
            silence(1.0),
            voice(1.0),  # 1.0–2.0
            silence(1.0),
            voice(0.6, f0=300),  # 3.0–3.6
            silence(0.15),  # a short pause: same utterance
            voice(0.6, f0=300),  # 3.75–4.35
            silence(1.0),
            voice(0.1),  # a blip: no final
            silence(1.0),
            voice(1.2),  # 6.45–7.65, ended by the end message
        ]
    )
    out = run_session(y)
    finals = of_type(out, "final")
    assert [f["utterance"] for f in finals] == [1, 2, 3]
    np.testing.assert_allclose(
        [[f["start"], f["end"]] for f in finals], [[1.0, 2.0], [3.0, 4.35], [6.45, 7.65]], atol=0.1
    )
    assert [f["label"] for f in finals] == ["neutral", "angry", "neutral"]
    for f in finals:
        assert sum(f["probabilities"].values()) == pytest.approx(1.0)
    assert out[-1] == {"type": "done", "utterances": 3}
    partials = of_type(out, "partial")
    assert len(partials) == int(y.size / SR / 0.5)
    voiced_t = [p["t"] for p in partials if p["voiced"]]
    assert 1.5 in voiced_t and 0.5 not in voiced_t and 1.0 not in voiced_t
    for p in partials:
        if p["voiced"]:
            assert sum(p["probabilities"].values()) == pytest.approx(1.0) and p["label"] in LABELS
        assert p["latency_ms"] >= 0
    # the first utterance's final is sent once 0.5 s of silence follows it, before the partial at t = 3.0 s
    i_final = out.index(finals[0])
    assert out[i_final - 1]["t"] == 2.5 and out[i_final + 1]["t"] == 3.0


def test_split_path_gives_the_same_messages_and_calls_the_model_only_when_due():
    """What the server does per audio frame: ingest_frame (no model) + advance, the latter in a worker only when
    work_pending says a partial or a final is due. Same messages as handle(); the model runs only then."""
    y = np.concatenate([silence(0.6), voice(1.0), silence(1.0), voice(0.8, f0=300), silence(0.8)])
    reference = run_session(y)
    pred = FakePredictor()
    s = S.StreamSession(lambda: pred)
    out = s.handle(json.dumps({"type": "start", "sample_rate": SR, "encoding": "pcm16"}))
    n, pending, calls_when_idle = round(0.02 * SR), 0, 0
    for i in range(0, y.size, n):
        out += s.ingest_frame(S.encode_frame(y[i : i + n], "pcm16"))
        before = len(pred.calls)
        if s.work_pending():
            pending += 1
            out += s.advance()
        else:
            out += s.advance()
            calls_when_idle += len(pred.calls) - before
    out += s.handle('{"type": "end"}')
    strip = [{k: v for k, v in m.items() if k not in VARYING} for m in out]
    assert strip == [{k: v for k, v in m.items() if k not in VARYING} for m in reference]
    assert calls_when_idle == 0  # advance never ran the model when work_pending said no
    frames = -(-y.size // n)
    assert pending <= len(of_type(out, "partial")) + len(of_type(out, "final")) < frames / 10


def test_the_cheap_per_frame_path_answers_as_the_full_one():
    """The per-frame shortcuts (FrameVad.push returning early when no VAD frame completes, work_pending deciding
    without copying the endpointer when no VAD frame is new) change nothing: the flags equal one push of the whole
    signal, and work_pending equals the full check (a copy of the endpointer run over every analysed frame)."""
    import copy

    y = quantize(np.concatenate([silence(0.4), voice(1.2), silence(0.7), voice(0.6, f0=300), silence(0.9)]))
    whole = S.FrameVad(SR, S.StreamLimits().vad).push(y)
    chunked = S.FrameVad(SR, S.StreamLimits().vad)
    rng = np.random.default_rng(0)
    flags, i = [], 0
    while i < y.size:
        n = int(rng.integers(1, 1200))
        flags.append(chunked.push(y[i : i + n]))
        i += n
    assert np.array_equal(np.concatenate(flags), whole)

    def full_check(s: S.StreamSession) -> bool:  # work_pending as it was: always on a copy
        if s._buf.end >= s._next_partial:
            return True
        ep, upto = copy.copy(s._endpointer), s._buf.end / s.sr
        while ep.n < s._flag0 + len(s._flags) and (ep.n + 1) * s.frame_s <= upto + 1e-9:
            if ep.push(s._flags[ep.n - s._flag0]) is not None:
                return True
        return False

    s = S.StreamSession(lambda: FakePredictor())
    s.handle(json.dumps({"type": "start", "sample_rate": SR, "encoding": "pcm16"}))
    answers = []
    for k in range(0, y.size, 320):
        s.ingest_frame(S.encode_frame(y[k : k + 320], "pcm16"))
        answers.append((s.work_pending(), full_check(s)))
        s.advance()
    assert all(fast == full for fast, full in answers) and any(fast for fast, _ in answers)


def test_final_covers_the_whole_utterance_and_partials_the_window():
    fake = FakePredictor()
    run_session(np.concatenate([silence(0.5), voice(4.0), silence(1.0)]), fake, hop_s=1.0, window_s=1.5)
    window, utterance = int(1.5 * SR), int(4.0 * SR)
    assert window in fake.calls  # partials on the last 1.5 s
    assert max(fake.calls) == pytest.approx(utterance, abs=0.05 * SR)  # the final on the whole 4 s


def test_long_speech_is_cut_at_max_utterance():
    limits = S.StreamLimits(max_utterance_s=1.5)
    finals = of_type(run_session(np.concatenate([silence(0.3), voice(4.0), silence(1.0)]), limits=limits), "final")
    assert len(finals) == 3
    assert all(f["end"] - f["start"] <= 1.5 + 1e-6 for f in finals)


def test_frame_size_does_not_change_the_result():
    y = quantize(np.concatenate([silence(0.7), voice(1.3), silence(0.8), voice(0.9, f0=300), silence(0.3)]))

    def strip(msgs):
        return [{k: v for k, v in m.items() if k not in VARYING} for m in msgs]

    reference = strip(run_session(y, frame_s=0.02))
    for frame_s in (0.001, 0.137, 1.0, 4.0):
        assert strip(run_session(y, frame_s=frame_s)) == reference, frame_s


def test_pcm16_and_float32_give_the_same_probabilities(holder):
    y = quantize(np.concatenate([silence(0.5), voice(1.5), silence(0.8), voice(1.0, f0=250), silence(0.3)]))
    p = holder.get()
    a = run_session(y, p, encoding="pcm16")
    b = run_session(y, p, encoding="float32")

    def strip(msgs):
        return [{k: v for k, v in m.items() if k not in VARYING} for m in msgs]

    assert strip(a) == strip(b)
    assert len(of_type(a, "final")) == 2
    assert any(m["voiced"] for m in of_type(a, "partial"))


def test_resampled_from_48k_matches_16k(holder):
    p = holder.get()
    import soxr

    y16 = np.concatenate([silence(0.5), voice(1.5), silence(1.0), voice(1.0, f0=250), silence(0.5)])
    y48 = soxr.resample(y16, SR, 48000, quality="VHQ").astype(np.float32)
    a = run_session(y16, p, sr=SR, encoding="float32")
    b = run_session(y48, p, sr=48000, encoding="float32", frame_s=0.0213)
    fa, fb = of_type(a, "final"), of_type(b, "final")
    assert len(fa) == len(fb) == 2
    for x, z in zip(fa, fb, strict=True):
        assert x["start"] == pytest.approx(z["start"], abs=0.07) and x["end"] == pytest.approx(z["end"], abs=0.07)
        assert list(x["probabilities"].values()) == pytest.approx(list(z["probabilities"].values()), abs=0.05)
    pa, pb = of_type(a, "partial"), of_type(b, "partial")
    assert [m["t"] for m in pa] == [m["t"] for m in pb]  # times are on the model's clock
    assert [m["voiced"] for m in pa] == [m["voiced"] for m in pb]


def test_model_rate_that_webrtcvad_does_not_take():
    fake = FakePredictor(sample_rate=22050)
    y = np.concatenate([silence(0.5, 44100), voice(1.0, sr=44100), silence(1.0, 44100)])
    out = run_session(y, fake, sr=44100)
    assert out[0]["sample_rate"] == 22050
    finals = of_type(out, "final")
    assert len(finals) == 1 and finals[0]["start"] == pytest.approx(0.5, abs=0.1)
    assert finals[0]["end"] == pytest.approx(1.5, abs=0.1)


# ------------------------------------------------------------------------------------------------ malformed input


def test_session_errors_keep_the_stream_going():
    fake = FakePredictor()
    s = S.StreamSession(lambda: fake)

    def code(msg) -> str:
        out = s.handle(msg)
        assert len(out) == 1 and out[0]["type"] == "error" and out[0]["message"], out
        return out[0]["code"]

    assert code(b"\x00\x00") == "not_started"
    assert code("{not json") == "bad_json"
    assert code("[1, 2]") == "bad_message"
    assert code('{"kind": "start"}') == "bad_message"
    assert code('{"type": "pause"}') == "unknown_type"
    assert code("x" * (S.MAX_TEXT_CHARS + 1)) == "bad_message"
    assert code('{"type": "start", "sample_rate": 16000, "encoding": "mp3"}') == "bad_start"
    assert code('{"type": "start", "sample_rate": 96000}') == "bad_start"
    assert not s.started
    out = s.handle('{"type": "start", "sample_rate": 16000, "encoding": "pcm16"}')
    assert out[0]["type"] == "ready"
    assert code('{"type": "start", "sample_rate": 16000}') == "already_started"
    assert code(b"\x00\x00\x00") == "bad_frame"
    assert code(b"\x00" * (s.limits.max_frame_bytes + 2)) == "frame_too_large"
    assert s.handle(b"") == []
    assert s.close is None and s.errors == 11
    # the stream still works after all that
    out = []
    y = np.concatenate([silence(0.5), voice(1.0), silence(0.7)])
    for i in range(0, y.size, 320):
        out += s.handle(S.encode_frame(y[i : i + 320], "pcm16"))
    out += s.handle('{"type": "end"}')
    assert len(of_type(out, "final")) == 1 and out[-1] == {"type": "done", "utterances": 1}
    assert s.close == S.Close(1000, "done") and s.handle(b"\x00\x00") == []


def test_float32_nan_frame_is_dropped():
    s = S.StreamSession(FakePredictor)
    s.handle('{"type": "start", "sample_rate": 16000, "encoding": "float32"}')
    y = silence(0.3)
    y[5] = np.nan
    out = s.handle(S.encode_frame(y, "float32"))
    assert [m["code"] for m in out] == ["invalid_audio"]
    assert s.stream_s == 0.0  # nothing of the bad frame was taken
    assert of_type(s.handle(S.encode_frame(silence(0.6), "float32")), "partial")[0]["t"] == 0.5


def test_session_not_ready_then_ready():
    model: list = []

    def get():
        if not model:
            raise SerError("no model loaded (loading)")
        return model[0]

    s = S.StreamSession(get)
    start = '{"type": "start", "sample_rate": 16000}'
    assert s.handle(start)[0]["code"] == "not_ready"
    model.append(FakePredictor())
    assert s.handle(start)[0] == {
        "type": "ready",
        "model_version": "fake-1",
        "labels": LABELS,
        "sample_rate": SR,
        "hop_s": 0.5,
        "window_s": 2.0,
    }


def test_session_closes_only_when_it_cannot_go_on():
    s = S.StreamSession(FakePredictor, S.StreamLimits(max_errors=3))
    for _ in range(2):
        s.handle(b"x")
    assert s.close is None
    out = s.handle("{")
    assert [m["code"] for m in out] == ["bad_json", "too_many_errors"] and s.close.code == 1008

    s = S.StreamSession(FakePredictor, S.StreamLimits(max_stream_s=1.0))
    s.handle('{"type": "start", "sample_rate": 16000}')
    s.handle(S.encode_frame(silence(0.9), "pcm16"))
    out = s.handle(S.encode_frame(silence(0.2), "pcm16"))
    assert out[-1]["code"] == "stream_too_long" and s.close.code == 1008

    s = S.StreamSession(FakePredictor)
    assert s.handle('{"type": "end"}') == [{"type": "done", "utterances": 0}] and s.close.code == 1000


# ------------------------------------------------------------------------------------------------ the WebSocket route


def receive_until_done(ws, limit: int = 10_000) -> list[dict]:
    out = []
    for _ in range(limit):
        m = ws.receive_json()
        out.append(m)
        if m["type"] == "done":
            return out
    raise AssertionError("no done message")


def stream_clip(ws, y: np.ndarray, sr: int = SR, frame_s: float = 0.02, **start) -> list[dict]:
    ws.send_text(json.dumps({"type": "start", "sample_rate": sr, "encoding": "pcm16", **start}))
    ready = ws.receive_json()
    assert ready["type"] == "ready", ready
    n = round(frame_s * sr)
    for i in range(0, y.size, n):
        ws.send_bytes(S.encode_frame(y[i : i + n], "pcm16"))
    ws.send_text(json.dumps({"type": "end"}))
    return [ready, *receive_until_done(ws)]


def assert_closed(ws, code: int) -> None:
    with pytest.raises(WebSocketDisconnect) as exc:
        ws.receive_json()
    assert exc.value.code == code


@pytest.mark.shared_data
def test_ws_protocol_on_a_real_clip(make_client, clip):
    c = make_client()
    with c.websocket_connect("/v1/stream") as ws:
        out = stream_clip(ws, clip)
        assert_closed(ws, 1000)
    ready = out[0]
    assert ready == {
        "type": "ready",
        "model_version": "1",
        "labels": LABELS,
        "sample_rate": SR,
        "hop_s": 0.5,
        "window_s": 2.0,
    }
    partials = of_type(out, "partial")
    times = [p["t"] for p in partials]
    assert times == pytest.approx(np.arange(1, len(times) + 1) * 0.5) and len(times) == int(clip.size / SR / 0.5)
    voiced = [p for p in partials if p["voiced"]]
    assert len(voiced) >= 3 and not partials[0]["voiced"]  # RAVDESS clips open with about 1 s of silence
    for p in voiced:
        assert set(p["probabilities"]) == set(LABELS) and sum(p["probabilities"].values()) == pytest.approx(1.0)
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get) and p["latency_ms"] > 0
    finals = of_type(out, "final")
    assert len(finals) == 1 and finals[0]["utterance"] == 1
    assert 0.6 < finals[0]["start"] < 1.4 and 2.6 < finals[0]["end"] < 3.6
    assert sum(finals[0]["probabilities"].values()) == pytest.approx(1.0)
    assert out[-1] == {"type": "done", "utterances": 1} and of_type(out, "error") == []
    # the final is the model's answer on the utterance's audio
    a, b = round(finals[0]["start"] * SR), round(finals[0]["end"] * SR)
    expected = c.app.state.holder.get().predict_proba(quantize(clip)[a:b])
    assert list(finals[0]["probabilities"].values()) == pytest.approx(list(expected), abs=1e-5)


@pytest.mark.shared_data
def test_ws_malformed_input_keeps_the_connection(make_client, clip):
    c = make_client()
    with c.websocket_connect("/v1/stream") as ws:

        def error_code(send) -> str:
            send()
            m = ws.receive_json()
            assert m["type"] == "error" and m["message"], m
            return m["code"]

        assert error_code(lambda: ws.send_bytes(b"\x00\x01")) == "not_started"
        assert error_code(lambda: ws.send_text("{oops")) == "bad_json"
        assert error_code(lambda: ws.send_text('{"type": "rewind"}')) == "unknown_type"
        assert error_code(lambda: ws.send_text('{"type": "start", "sample_rate": 16000, "encoding": "ogg"}')) == (
            "bad_start"
        )
        ws.send_text('{"type": "start", "sample_rate": 16000, "encoding": "pcm16"}')
        assert ws.receive_json()["type"] == "ready"
        assert error_code(lambda: ws.send_bytes(b"\x00\x01\x02")) == "bad_frame"
        assert error_code(lambda: ws.send_text('{"type": "start", "sample_rate": 16000}')) == "already_started"
        # still streaming: the clip gives its final and done
        n = 320
        for i in range(0, clip.size, n):
            ws.send_bytes(S.encode_frame(clip[i : i + n], "pcm16"))
        ws.send_text('{"type": "end"}')
        out = receive_until_done(ws)
        assert len(of_type(out, "final")) == 1 and of_type(out, "error") == []
        assert_closed(ws, 1000)
    with c.websocket_connect("/v1/stream") as ws:
        ws.send_text('{"type": "start", "sample_rate": 16000, "encoding": "float32"}')
        ws.receive_json()
        bad = np.array([0.0, np.nan, 0.1, 0.2], "<f4").tobytes()
        assert error_code(lambda: ws.send_bytes(bad)) == "invalid_audio"
        ws.send_bytes(S.encode_frame(silence(0.5), "float32"))
        assert ws.receive_json()["type"] == "partial"


def test_ws_api_key_header_or_subprotocol(make_client, holder):
    """The key in a header or the key subprotocol; never in the URL (more in tests/serve/test_security.py)."""
    from ser.serve.security import ws_key_protocol

    c = make_client(api_keys=["s3cret"])
    with c.websocket_connect("/v1/stream") as ws:
        m = ws.receive_json()
        assert m["type"] == "error" and m["code"] == "unauthorized"
        assert_closed(ws, 1008)
    for url in ("/v1/stream?api_key=wrong", "/v1/stream?api_key=s3cret"):
        with c.websocket_connect(url) as ws:
            assert ws.receive_json()["code"] == "unauthorized"
            assert_closed(ws, 1008)
    for kw in ({"headers": {"X-API-Key": "s3cret"}}, {"subprotocols": ["ser.v1", ws_key_protocol("s3cret")]}):
        with c.websocket_connect("/v1/stream", **kw) as ws:
            ws.send_text('{"type": "start", "sample_rate": 16000}')
            assert ws.receive_json()["type"] == "ready"


def test_ws_not_ready_then_ready(model_dir):
    h = ModelHolder(model_dir)
    with TestClient(create_app(Settings(model_dir=model_dir), holder=h)) as c:
        # the lifespan loads the model in the background; before it is in, start is answered not_ready (the
        # background load is let finish first, or it could put the model back between the next two lines)
        deadline = time.monotonic() + 30
        while not h.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        assert h.ready
        h._predictor = None
        with c.websocket_connect("/v1/stream") as ws:
            ws.send_text('{"type": "start", "sample_rate": 16000}')
            assert ws.receive_json()["code"] == "not_ready"
            assert h.reload().ok
            ws.send_text('{"type": "start", "sample_rate": 16000}')
            assert ws.receive_json()["type"] == "ready"


def _metrics(c: TestClient) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(c.get("/metrics").text):
        for s in fam.samples:
            key = s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items()))
            out[key] = s.value
    return out


@pytest.mark.shared_data
def test_ws_abrupt_disconnect_then_a_normal_stream(make_client, clip):
    c = make_client()
    with c.websocket_connect("/v1/stream") as ws:
        ws.send_text('{"type": "start", "sample_rate": 16000}')
        ws.receive_json()
        for i in range(0, SR * 2, 320):
            ws.send_bytes(S.encode_frame(clip[i : i + 320], "pcm16"))
        ws.receive_json()  # a partial: the stream is mid-way
    # leaving the block without "end" drops the connection; the app must not raise (the test client re-raises)
    with c.websocket_connect("/v1/stream") as ws:
        out = stream_clip(ws, clip)
    assert out[-1] == {"type": "done", "utterances": 1}
    m = _metrics(c)
    assert m["ser_stream_active"] == 0
    assert m["ser_streams_total,end=disconnect"] == 1 and m["ser_streams_total,end=done"] == 1
    assert m["ser_stream_messages_total,code=,type=final"] == 1
    assert m["ser_stream_partial_latency_seconds_count"] >= 8 + 1
    assert m["ser_predictions_total,emotion={},endpoint=stream,model_version=1".format(out[-2]["label"])] == 1


def test_ws_too_many_streams_and_idle_timeout(make_client):
    c = make_client(max_streams=1, stream_idle_timeout_s=0.5)
    with c.websocket_connect("/v1/stream") as first:
        first.send_text('{"type": "start", "sample_rate": 16000}')
        assert first.receive_json()["type"] == "ready"
        with c.websocket_connect("/v1/stream") as second:
            assert second.receive_json()["code"] == "too_many_streams"
            assert_closed(second, 1013)
        assert first.receive_json()["code"] == "idle_timeout"  # nothing sent for 0.5 s
        assert_closed(first, 1008)
    assert _metrics(c)["ser_stream_active"] == 0


def test_ws_inference_does_not_block_other_requests(model_dir):
    slow = FakePredictor(delay_s=1.0)
    h = ModelHolder(model_dir, loader=lambda path, threads: slow)
    assert h.reload().ok
    with (
        TestClient(create_app(Settings(model_dir=model_dir), holder=h)) as c,
        c.websocket_connect("/v1/stream") as ws,
    ):
        ws.send_text('{"type": "start", "sample_rate": 16000}')
        ws.receive_json()
        ws.send_bytes(S.encode_frame(voice(0.5), "pcm16"))  # one voiced hop: a 1 s inference starts
        time.sleep(0.2)
        t0 = time.perf_counter()
        assert c.get("/healthz").status_code == 200
        with c.websocket_connect("/v1/stream") as other:
            other.send_text('{"type": "start", "sample_rate": 16000}')
            assert other.receive_json()["type"] == "ready"
        assert time.perf_counter() - t0 < 0.6
        assert ws.receive_json()["voiced"] is True


def test_demo_page_routes(make_client):
    c = make_client()
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for needle in ('id="status"', 'id="bars"', 'id="summary"', 'src="static/app.js"', 'href="static/style.css"'):
        assert needle in page.text
    assert "http://" not in page.text and "https://" not in page.text  # everything is served from here
    js = c.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and "v1/stream" in js.text
    assert "://" not in js.text and "import " not in js.text  # no CDN, no module fetched from elsewhere
    assert c.get("/static/style.css").headers["content-type"].startswith("text/css")
    for bad in ("/static/missing.js", "/static/..%2Fapp.py", "/static/.hidden", "/static/../app.py"):
        r = c.get(bad)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", bad


# ------------------------------------------------------------------------------------------------ a real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app, timeout_s: float = 30.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread → ``host:port``."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@contextlib.contextmanager
def watch_logs(caplog, *names: str) -> Iterator[None]:
    """Send the records of loggers ``names`` (uvicorn's do not propagate to the root) to ``caplog``."""
    loggers = [logging.getLogger(n) for n in names]
    for lg in loggers:
        lg.addHandler(caplog.handler)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeHandler(caplog.handler)


@pytest.mark.shared_data
def test_abrupt_tcp_disconnect_on_a_real_server(holder, clip, caplog):
    from websockets.sync.client import connect

    # auth none: an explicit choice, so the start-up has no "open server" warning to confuse with a problem
    app = create_app(Settings(model_dir=holder.model_dir, auth="none"), holder=holder)
    with running_server(app) as addr, watch_logs(caplog, "uvicorn", "ser"):
        ws = connect(f"ws://{addr}/v1/stream")
        ws.send(json.dumps({"type": "start", "sample_rate": SR, "encoding": "pcm16"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        for i in range(0, 3 * SR, 320):
            ws.send(S.encode_frame(clip[i : i + 320], "pcm16"))
        json.loads(ws.recv(timeout=10))
        ws.socket.shutdown(socket.SHUT_RDWR)  # no close frame: the TCP connection just goes
        ws.socket.close()
        time.sleep(0.5)
        with connect(f"ws://{addr}/v1/stream") as ws2:
            ws2.send(json.dumps({"type": "start", "sample_rate": SR, "encoding": "pcm16"}))
            json.loads(ws2.recv(timeout=10))
            for i in range(0, clip.size, 320):
                ws2.send(S.encode_frame(clip[i : i + 320], "pcm16"))
            ws2.send(json.dumps({"type": "end"}))
            msgs = []
            while not msgs or msgs[-1]["type"] != "done":
                msgs.append(json.loads(ws2.recv(timeout=10)))
        assert msgs[-1] == {"type": "done", "utterances": 1}
        import httpx

        deadline = time.monotonic() + 5
        while True:
            text = httpx.get(f"http://{addr}/metrics").text
            if "ser_stream_active 0.0" in text or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert "ser_stream_active 0.0" in text
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert problems == [], [r.getMessage() for r in problems]


# ------------------------------------------------------------------------------------------------ ser listen


@pytest.mark.shared_data
def test_listen_file(run_cli, model_dir, ravdess_dir, tmp_path):
    wav = tmp_path / "angry.wav"
    y, sr = sf.read(ravdess_dir / "Actor_01" / CLIP, dtype="float32")
    sf.write(wav, y, sr, subtype="PCM_16")
    code, out, err = run_cli("listen", "--model", model_dir, "--file", wav, "--fast", "--json")
    assert code == 0, err
    msgs = [json.loads(line) for line in out.splitlines()]
    assert msgs[0]["type"] == "ready" and msgs[-1] == {"type": "done", "utterances": 1}
    assert len(of_type(msgs, "partial")) == 8 and len(of_type(msgs, "final")) == 1
    code, out, err = run_cli("listen", "--model", model_dir, "--file", wav, "--fast", "--hop", "1.0")
    assert code == 0, err
    assert "utterance 1: " in out and "1 utterance(s) in 4.1 s of audio" in out


def test_listen_errors(run_cli, model_dir, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_sounddevice(name, *a, **k):
        if name == "sounddevice":
            raise ImportError("No module named 'sounddevice'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_sounddevice)
    code, _, err = run_cli("listen", "--model", model_dir)
    assert code == 2 and "sounddevice" in err and "--file" in err
    code, _, err = run_cli("listen", "--model", model_dir, "--file", tmp_path / "missing.wav")
    assert code == 2 and "not found" in err
    wav = tmp_path / "s.wav"
    sf.write(wav, voice(1.0), SR)
    code, _, err = run_cli("listen", "--model", model_dir, "--file", wav, "--hop", "0.01")
    assert code == 2 and "hop_s" in err


def test_listen_file_at_44k(run_cli, model_dir, tmp_path):
    sr = 44100
    y = np.concatenate([silence(0.5, sr), voice(1.0, sr=sr), silence(1.0, sr), voice(1.0, sr=sr), silence(0.6, sr)])
    wav = tmp_path / "bursts.wav"
    sf.write(wav, np.stack([y, y], axis=1), sr, subtype="PCM_24")  # stereo 24-bit: mixed down, resampled
    code, out, err = run_cli("listen", "--model", model_dir, "--file", wav, "--fast", "--json")
    assert code == 0, err
    msgs = [json.loads(line) for line in out.splitlines()]
    finals = of_type(msgs, "final")
    assert msgs[-1] == {"type": "done", "utterances": 2} and len(finals) == 2
    np.testing.assert_allclose([[f["start"], f["end"]] for f in finals], [[0.5, 1.5], [2.5, 3.5]], atol=0.1)


@pytest.mark.shared_data
def test_partials_of_a_real_model_equal_its_answer_on_each_window(model_dir, clip):
    """The session hands each window's STFT from its WindowSpectrogram to the model (most frames reused): every
    voiced partial's probabilities are the model's answer on that window computed from scratch."""
    from ser.inference import Predictor

    p = Predictor(model_dir)
    y = quantize(np.concatenate([clip, clip[: SR // 2]]))
    out = run_session(y, p, hop_s=0.5, window_s=2.0)
    partials = [m for m in of_type(out, "partial") if m["voiced"]]
    assert len(partials) >= 4
    for m in partials:
        end = round(m["t"] * SR)
        window = y[max(0, end - 2 * SR) : end]
        want = p.predict_proba(window)
        got = np.array([m["probabilities"][lab] for lab in p.labels])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
