"""``ser serve``, ``ser predict`` and ``ser timeline``: the exported model over HTTP and on files (no PyTorch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ser.cli._apps import app, console, print_json, require_file
from ser.cli._model_opts import MODEL_HELP, REF_HELP, WORKDIR_HELP, load_predictor, model_dir_of
from ser.errors import ConfigError, SerError


@app.command("serve")
def serve(
    model: Path | None = typer.Option(None, "--model", help=MODEL_HELP),
    workdir: Path | None = typer.Option(None, "--workdir", help=WORKDIR_HELP),
    ref: str | None = typer.Option(None, "--ref", help=REF_HELP),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int | None = typer.Option(
        None, "--port", help="default: $SER_PORT, $AIP_HTTP_PORT (Vertex AI), $PORT (Cloud Run), else 8000"
    ),
    api_key: list[str] | None = typer.Option(
        None, "--api-key", help="accepted API key, NAME:KEY or KEY (repeatable; or $SER_API_KEYS)"
    ),
    admin_key: list[str] | None = typer.Option(
        None, "--admin-key", help="key of /v1/admin/* (repeatable; or $SER_ADMIN_KEYS; default: the API keys)"
    ),
    auth: str | None = typer.Option(
        None, "--auth", help="key: require API keys; none: no key check (a platform in front authenticates)"
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="serve /metrics on this port only, without a key (or $SER_METRICS_PORT)"
    ),
    reload_poll: float | None = typer.Option(
        None,
        "--reload-poll",
        help="poll the model source every N s and reload when it changed; 0: off (default: 10 s with a workdir, "
        "following the champion; off with --model)",
    ),
    processes: int | None = typer.Option(
        None,
        "--processes",
        help="worker processes behind the port, one per core for more streams (default 1; or $SER_PROCESSES)",
    ),
    max_upload_mb: float | None = typer.Option(None, "--max-upload-mb", help="largest upload, MiB (default 20)"),
    max_audio_s: float | None = typer.Option(None, "--max-audio-s", help="longest clip for /v1/predict (default 60)"),
    timeout: float | None = typer.Option(None, "--timeout", help="per-request inference time limit, s (default 30)"),
    cors: list[str] | None = typer.Option(None, "--cors", help="allowed CORS origin (repeatable)"),
    workers: int | None = typer.Option(
        None, "--workers", help="concurrent inferences per process (default: all cores)"
    ),
    prediction_log: str | None = typer.Option(
        None,
        "--prediction-log",
        help="prediction log folder or URI, or 'off' ($SER_PREDICTION_LOG; default <workdir>/monitor/predictions "
        "with --workdir, off with --model)",
    ),
    shadow: str | None = typer.Option(
        None, "--shadow", help="second model, logged never returned: registry ref (challenger) or folder"
    ),
    shadow_share: float | None = typer.Option(
        None, "--shadow-share", help="share of /v1/predict answers the shadow model also runs (default 1.0)"
    ),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Serve the model over HTTP (FastAPI + uvicorn), documented at /docs.

    Routes: /v1/predict, /v1/predict/batch, /v1/timeline, /v1/feedback, /v1/model, /v1/admin/reload, /healthz,
    /readyz, /metrics.

    Options left out are read from SER_* environment variables (SER_MODEL_DIR, SER_WORKDIR, SER_API_KEYS, ...).
    Serving a workdir, the registry's champion is polled every 10 s (--reload-poll) and hot-reloaded when it moves;
    a --model folder is polled only with --reload-poll. Without keys and without --auth none the server is open
    (for local use; a warning says so).

    --processes N runs N worker processes on the port (metrics aggregated over them, SER_MAX_STREAMS shared out
    among them, one prediction-log file set each, every one polling the model source).

    Every answer gets a prediction_id and a record in the prediction log (POST /v1/feedback takes its true label);
    --shadow runs a second model on the same inputs and logs its answers under its own version.

    Example: ser serve --workdir runs --port 8000 --api-key alice:s3cret --processes 2 --shadow challenger
    """
    import uvicorn

    from ser.serve.app import create_app
    from ser.serve.settings import Settings

    if model is not None and (workdir is not None or ref is not None):
        raise ConfigError("give --model or --workdir/--ref, not both")
    if port is None:
        import os

        from ser.serve.platform import listen_port

        try:
            port = listen_port(os.environ)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if model is not None:
        model_dir_of(model, None, None)  # fail now on a bad folder, not in the background
    try:
        settings = Settings.from_env(
            model_dir=model,
            workdir=workdir,
            model_ref=ref,
            api_keys=api_key or None,
            reload_poll_s=reload_poll,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024) if max_upload_mb is not None else None,
            max_audio_s=max_audio_s,
            request_timeout_s=timeout,
            cors_origins=cors or None,
            inference_workers=workers,
            admin_keys=admin_key or None,
            auth=auth,
            metrics_port=metrics_port,
            prediction_log=prediction_log,
            shadow_ref=shadow,
            shadow_share=shadow_share,
            processes=processes,
        )
    except ValueError as exc:  # pydantic's ValidationError too: one line per bad field, never a key
        raise ConfigError(_one_line(exc)) from None
    if settings.metrics_port == port:
        raise ConfigError(f"--metrics-port {port} is the API port: give another one")
    from ser.serve.app import one_blas_thread_per_request
    from ser.serve.security import Auth

    metrics_at = f"http://{host}:{settings.metrics_port}/metrics" if settings.metrics_port else "/metrics"
    console.print(f"serving on http://{host}:{port}; metrics at {metrics_at}; {_shape(settings)}", highlight=False)
    console.print(Auth.from_settings(settings).describe(), highlight=False)
    # No `server: uvicorn` banner; access-log lines lose their query strings (ser.serve.security). h11 (not
    # httptools) so that the request line + headers are bounded: a larger head is refused (400) and its connection
    # closed before it is buffered whole (httptools has no such limit).
    options: dict[str, Any] = {
        "log_level": log_level,
        "workers": 1,
        "server_header": False,
        "http": "h11",
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }
    if settings.processes > 1:  # uvicorn's supervisor: every worker builds its app (ser.serve.processes)
        from ser.serve import processes as multi

        multi.run(settings, host, port, options)
        return
    one_blas_thread_per_request()
    app_ = create_app(settings)
    if settings.metrics_port is None:
        uvicorn.run(app_, host=host, port=port, **options)
        return
    # The metrics port: one server, two listening sockets; the app tells them apart (security.MetricsPortGate).
    config = uvicorn.Config(app_, host=host, port=port, **options)
    metrics_config = uvicorn.Config(app_, host=host, port=settings.metrics_port, **options)
    uvicorn.Server(config).run(sockets=[config.bind_socket(), metrics_config.bind_socket()])


def _shape(settings) -> str:
    """The start-up line's part on processes, streams and polling."""
    from ser.serve.processes import per_process

    n = settings.processes
    streams = f"{n} processes × {per_process(settings.max_streams, n)} streams" if n > 1 else "1 process"
    if n == 1:
        streams += f", {settings.max_streams} streams"
    poll = f"model polled every {settings.poll_s:g} s" if settings.poll_s > 0 else "model not polled"
    return f"{streams}; {poll}"


def _one_line(exc: ValueError) -> str:
    """A settings error on one line (pydantic's: each field and message; the values, keys maybe, are left out)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in errors())
    return str(exc)


def _prediction_rows(files: list[Path], predictor, abstain_below: float | None = None) -> list[dict[str, Any]]:
    """One row per file: the service's answer (label, probabilities, ``speech`` and ``reason``: no label when the
    file holds no speech or is mostly clipping; ``uncertain`` and ``abstained`` under ``abstain_below``) or the
    error."""
    import time

    from ser.audio import UNBOUNDED, decode
    from ser.serve.speech import predict_gated

    rows = []
    for f in files:
        try:
            t0 = time.perf_counter()
            decoded = decode(require_file(f, "audio file"), predictor.sample_rate, UNBOUNDED)
            out = predict_gated(predictor, decoded.audio, decoded.clipped, t0, abstain_below=abstain_below)
            rows.append({"file": str(f), "ok": True, **out})
        except SerError as exc:
            rows.append({"file": str(f), "ok": False, "error": str(exc)})
    return rows


@app.command("predict")
def predict(
    files: list[Path] = typer.Argument(..., help="audio files (any format libsndfile reads)"),
    model: Path | None = typer.Option(None, "--model", help=MODEL_HELP),
    workdir: Path | None = typer.Option(None, "--workdir", help=WORKDIR_HELP),
    ref: str | None = typer.Option(None, "--ref", help=REF_HELP),
    threads: int | None = typer.Option(None, "--threads", help="onnxruntime threads (default: all cores)"),
    abstain_below: float | None = typer.Option(
        None,
        "--abstain-below",
        min=0.0,
        max=1.0,
        help="answer 'uncertain' when the top probability is below this (probabilities still given)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print a JSON list, one object per file"),
) -> None:
    """Predict the emotion of audio files with an exported model (onnxruntime, no PyTorch).

    A file that cannot be read is reported on its own line; the exit code is 1 if any file failed. A file without
    speech (or mostly clipping) gets no emotion: "speech": false and a "reason" (no_speech, clipped) in --json.
    With --abstain-below P, a file whose top (calibrated) probability is below P is labelled "uncertain"
    ("abstained": true in --json).

    Example: ser predict clip1.wav clip2.flac --workdir runs --json
    """
    predictor = load_predictor(model, workdir, ref, threads)
    rows = _prediction_rows(files, predictor, abstain_below)
    if as_json:
        print_json(rows)
    else:
        table = Table(title=f"{predictor.name} v{predictor.version}")
        for col in ("file", "emotion", "p", "runner-up", "duration s", "ms"):
            table.add_column(col, overflow="fold")
        for r in rows:
            if not r["ok"]:
                table.add_row(r["file"], "[red]error[/red]", "", r["error"], "", "")
                continue
            if not r["speech"]:
                why = "no speech" if r["reason"] == "no_speech" else "clipped"
                table.add_row(r["file"], f"[yellow]({why})[/yellow]", "", "", f"{r['duration_s']:.2f}", "")
                continue
            ranked = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])
            second = f"{ranked[1][0]} {ranked[1][1]:.2f}" if len(ranked) > 1 else ""
            table.add_row(
                r["file"],
                r["label"],
                f"{ranked[0][1]:.2f}",
                second,
                f"{r['duration_s']:.2f}",
                f"{r['processing_ms']:.0f}",
            )
        console.print(table)
    if any(not r["ok"] for r in rows):
        raise typer.Exit(1)


@app.command("timeline")
def timeline(
    file: Path = typer.Argument(..., help="a (long) recording"),
    model: Path | None = typer.Option(None, "--model", help=MODEL_HELP),
    workdir: Path | None = typer.Option(None, "--workdir", help=WORKDIR_HELP),
    ref: str | None = typer.Option(None, "--ref", help=REF_HELP),
    plot: Path | None = typer.Option(None, "--plot", help="write the timeline as a PNG here"),
    step: float = typer.Option(0.5, "--step", help="grid step, seconds"),
    smoothing: str = typer.Option("ema", "--smoothing", help="ema, median or none"),
    aggressiveness: int = typer.Option(2, "--aggressiveness", help="webrtcvad mode 0..3"),
    threshold: float = typer.Option(0.5, "--threshold", help="peak threshold on smoothed p(angry)"),
    threads: int | None = typer.Option(None, "--threads", help="onnxruntime threads (default: all cores)"),
    as_json: bool = typer.Option(False, "--json", help="print segments, timeline and summary as JSON"),
) -> None:
    """Emotion timeline of a long recording, with a summary and an optional plot.

    Voiced segments (webrtcvad) are classified one by one, put on a smoothed grid, and summarised: share of voiced
    time per emotion, dominant emotion, anger peaks.

    Example: ser timeline call.wav --workdir runs --plot call.png
    """
    from ser.audio import load_audio
    from ser.timeline import TimelineConfig, analyze, plot_timeline
    from ser.vad import VadConfig

    cfg = TimelineConfig(
        vad=VadConfig(aggressiveness=aggressiveness),
        step_s=step,
        smoothing=smoothing,  # type: ignore[arg-type]  # checked by TimelineConfig
        peak_threshold=threshold,
    )
    predictor = load_predictor(model, workdir, ref, threads)
    audio = load_audio(require_file(file, "audio file"), predictor.sample_rate)
    tl = analyze(audio, predictor.sample_rate, predictor.predict_proba, predictor.labels, cfg)
    if plot is not None:
        plot_timeline(tl, plot, title=f"{file.name}: {predictor.name} v{predictor.version}")
    if as_json:
        print_json({"file": str(file), "model_version": predictor.version, **tl.to_dict(), "plot": plot and str(plot)})
        return
    s = tl.summary
    console.print(
        f"{file}: {s.duration_s:.1f} s, voiced {s.voiced_s:.1f} s in {len(tl.segments)} segments; "
        f"dominant: {s.dominant or 'none'}",
        highlight=False,
    )
    table = Table(title="share of voiced time")
    table.add_column("emotion")
    table.add_column("share")
    table.add_column("mean p")
    for label in tl.labels:
        table.add_row(label, f"{100 * s.shares[label]:.1f} %", f"{s.mean_probabilities[label]:.2f}")
    console.print(table)
    for pk in s.peaks:
        console.print(
            f"{s.peak_label} peak {pk.start_s:.1f}–{pk.end_s:.1f} s (max {pk.max_p:.2f} at {pk.t_max_s:.1f} s)"
        )
    if plot is not None:
        console.print(f"plot: {plot}")
