"""``ser listen``: live emotion of the microphone (or of a file played as if it were one) in the terminal.

The same session as ``WS /v1/stream`` (:class:`ser.serve.stream.StreamSession`) with the predictor in-process: audio
blocks go in, partials (every hop, over the last window, voice-gated) and per-utterance finals come out. Capture
uses the optional ``sounddevice`` package (PortAudio); ``--file`` needs neither.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ser.cli._apps import app, console, require_file
from ser.cli._model_opts import MODEL_HELP, REF_HELP, WORKDIR_HELP, load_predictor
from ser.errors import SerError

BLOCK_S = 0.02
"""Capture block (s): 20 ms, as a browser or a phone would send."""

SOUNDDEVICE_HELP = (
    "microphone capture needs the optional sounddevice package and the PortAudio library "
    "(pip install sounddevice; apt-get install libportaudio2); or simulate the microphone with --file WAV"
)


# ----------------------------------------------------------------------------------------------------------------
# audio sources: blocks of float32 samples (n,) at the source's rate


def file_blocks(path: Path, block_s: float = BLOCK_S, *, realtime: bool = False) -> tuple[int, Iterator[np.ndarray]]:
    """A recording as a microphone would deliver it: ``(native_rate, blocks)``, mono float32 blocks of ``block_s``
    seconds at the file's own rate (resampling is the session's job); ``realtime`` paces them at the audio's speed."""
    from ser.audio import read_native, to_mono

    y, sr = read_native(require_file(path, "audio file"))
    y = to_mono(y)
    if not np.all(np.isfinite(y)):
        raise SerError(f"{path}: non-finite samples (NaN or Inf)")
    n = max(1, round(block_s * sr))

    def gen() -> Iterator[np.ndarray]:
        t0 = time.perf_counter()
        for i in range(0, y.size, n):
            if realtime:
                time.sleep(max(0.0, t0 + i / sr - time.perf_counter()))
            yield y[i : i + n]

    return sr, gen()


def mic_blocks(device: str | None, sample_rate: int | None, block_s: float = BLOCK_S) -> tuple[int, Iterator]:
    """Microphone blocks through sounddevice: ``(rate, blocks)``; the rate is ``sample_rate`` or the device's
    default. A clear :class:`SerError` when sounddevice or PortAudio is missing."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as exc:  # OSError: the package is there but libportaudio is not
        raise SerError(f"{SOUNDDEVICE_HELP} ({exc})") from None
    dev: Any = int(device) if device is not None and device.isdigit() else device
    try:
        sr = int(sample_rate or sd.query_devices(dev, "input")["default_samplerate"])
    except Exception as exc:  # sounddevice raises PortAudioError / ValueError for a missing device
        raise SerError(f"no usable input device {device or '(default)'}: {exc}") from None
    q: queue.Queue[np.ndarray] = queue.Queue()

    def callback(indata: np.ndarray, frames: int, t: Any, status: Any) -> None:
        q.put(indata[:, 0].copy())

    def gen() -> Iterator[np.ndarray]:
        try:
            stream = sd.InputStream(
                samplerate=sr, channels=1, dtype="float32", blocksize=round(block_s * sr), device=dev, callback=callback
            )
        except Exception as exc:
            raise SerError(f"cannot open the microphone: {exc}") from None
        with stream:
            while True:
                yield q.get()

    return sr, gen()


# ----------------------------------------------------------------------------------------------------------------
# display


def bar(p: float, width: int = 30) -> str:
    """A text bar of ``p`` in [0, 1] over ``width`` cells."""
    full = round(max(0.0, min(1.0, p)) * width)
    return "█" * full + "·" * (width - full)


class LiveView:
    """What the terminal shows: bars of the last voiced partial, the stream clock, the last finals."""

    def __init__(self, labels: list[str], source: str):
        self.labels, self.source = labels, source
        self.last: dict[str, Any] | None = None
        self.t = 0.0
        self.voiced = False
        self.latency_ms = 0.0
        self.finals: list[dict[str, Any]] = []

    def update(self, m: dict[str, Any]) -> None:
        if m["type"] == "partial":
            self.t, self.voiced, self.latency_ms = m["t"], m["voiced"], m["latency_ms"]
            if m["voiced"]:
                self.last = m
        elif m["type"] == "final":
            self.finals.append(m)

    def __rich__(self) -> Group:
        state = "[green]voice[/green]" if self.voiced else "[dim]silence[/dim]"
        head = Text.from_markup(f"{self.source}  t = {self.t:6.1f} s  {state}  {self.latency_ms:5.0f} ms")
        table = Table(show_header=False, box=None, pad_edge=False)
        probs = (self.last or {}).get("probabilities") or {}
        top = (self.last or {}).get("label")
        for label in self.labels:
            p = probs.get(label, 0.0)
            style = "bold" if label == top else ""
            table.add_row(Text(label, style=style), Text(bar(p), style=style), f"{p:.2f}")
        lines = [f"#{f['utterance']} {f['start']:.1f}–{f['end']:.1f} s: {f['label']}" for f in self.finals[-5:]]
        return Group(head, table, Text("\n".join(lines) or "no utterance yet", style="cyan"))


def final_line(m: dict[str, Any]) -> str:
    p = m["probabilities"][m["label"]]
    return f"utterance {m['utterance']}: {m['start']:.2f}–{m['end']:.2f} s  {m['label']} ({p:.2f})"


# ----------------------------------------------------------------------------------------------------------------
# the command


@app.command("listen")
def listen(
    file: Path | None = typer.Option(None, "--file", help="simulate the microphone with this recording"),
    model: Path | None = typer.Option(None, "--model", help=MODEL_HELP),
    workdir: Path | None = typer.Option(None, "--workdir", help=WORKDIR_HELP),
    ref: str | None = typer.Option(None, "--ref", help=REF_HELP),
    device: str | None = typer.Option(None, "--device", help="input device name or index (default: the system's)"),
    sample_rate: int | None = typer.Option(None, "--sample-rate", help="capture rate, Hz (default: the device's)"),
    hop: float = typer.Option(0.5, "--hop", help="a partial every HOP seconds of audio"),
    window: float = typer.Option(2.0, "--window", help="partials cover the last WINDOW seconds"),
    realtime: bool = typer.Option(True, "--realtime/--fast", help="with --file: play at real speed or at once"),
    duration: float | None = typer.Option(None, "--duration", help="stop after this many seconds of audio"),
    threads: int | None = typer.Option(None, "--threads", help="onnxruntime threads (default: all cores)"),
    as_json: bool = typer.Option(False, "--json", help="print every message (ready, partial, final, done) as JSON"),
) -> None:
    """Live emotion of the microphone: bars per emotion every hop, and one line per utterance.

    Runs the exported model in-process (no server) with the streaming session of WS /v1/stream. The microphone needs
    the optional sounddevice package (PortAudio); --file plays a recording instead (no audio device needed).
    Ctrl-C stops and prints the utterances so far.

    Example: ser listen --workdir runs

    Example: ser listen --model m/ --file call.wav --fast --json
    """
    from ser.serve.stream import StreamLimits, StreamSession, parse_start

    if duration is not None and duration <= 0:
        raise SerError(f"--duration must be > 0, got {duration:g}")
    if file is not None:
        sr, blocks = file_blocks(file, realtime=realtime)
        source = file.name
    else:
        sr, blocks = mic_blocks(device, sample_rate)
        source = f"microphone {device or ''}".strip()
    cfg = parse_start({"sample_rate": sr, "encoding": "float32", "hop_s": hop, "window_s": window})
    predictor = load_predictor(model, workdir, ref, threads)
    session = StreamSession(lambda: predictor, StreamLimits(max_stream_s=float("inf")))
    view = LiveView(list(predictor.labels), source)
    live = Live(view, console=console, refresh_per_second=10, transient=False) if console.is_terminal else None

    def emit(messages: list[dict[str, Any]]) -> None:
        for m in messages:
            if m["type"] == "error":  # only a bad start could get here; the CLI makes valid ones
                raise SerError(f"{m['code']}: {m['message']}")
            view.update(m)
            if as_json:
                typer.echo(json.dumps(m))
            elif live is None and m["type"] == "final":
                console.print(final_line(m), highlight=False)

    emit(session.start(cfg))
    if not as_json and live is None:
        console.print(f"{source}: {predictor.name} v{predictor.version}, hop {hop:g} s, window {window:g} s")
    limit = None if duration is None else round(duration * sr)
    fed = 0
    try:
        if live is not None and not as_json:
            live.start()
        for block in blocks:
            if limit is not None and fed >= limit:
                break
            block = block if limit is None else block[: limit - fed]
            fed += block.size
            emit(session.feed(block))
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None and live.is_started:
            live.stop()
    emit(session.finish())
    if not as_json:
        if live is not None:
            for f in view.finals:
                console.print(final_line(f), highlight=False)
        console.print(f"{session.utterances} utterance(s) in {session.stream_s:.1f} s of audio", highlight=False)
