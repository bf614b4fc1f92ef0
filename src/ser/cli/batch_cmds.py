"""``ser batch``: the emotion timeline of every recording of an archive → partitioned Parquet (onnxruntime only).

Parses options and calls :class:`ser.jobs.batch.BatchJob`; the model is found as ``ser timeline`` finds it
(:func:`ser.cli._model_opts.model_dir_of`: ``--model``, or ``--workdir`` / ``--ref`` in a registry).
"""

from __future__ import annotations

from pathlib import Path

import typer

from ser.cli._apps import app, console, print_json
from ser.cli._model_opts import MODEL_HELP, REF_HELP, WORKDIR_HELP, model_dir_of

DEFAULT_PROCESSOR = "ser.batch.worker:FileProcessor"  # ser.batch.worker.DEFAULT_PROCESSOR, not imported at start-up


@app.command("batch")
def batch(
    archive: str = typer.Argument(..., help="a folder, a file, or an fsspec URI (gs://, s3://, file://, memory://)"),
    out: str = typer.Option(
        ..., "--out", help="output folder or object store URI (gs://, s3://): segments/ and files/ Parquet tables"
    ),
    model: Path | None = typer.Option(None, "--model", help=MODEL_HELP),
    workdir: Path | None = typer.Option(None, "--workdir", help=WORKDIR_HELP),
    ref: str | None = typer.Option(None, "--ref", help=REF_HELP),
    workers: int = typer.Option(1, "--workers", help="local worker processes (with --ray local: its CPUs)"),
    ray: str | None = typer.Option(None, "--ray", help="run on Ray: auto, local, or a cluster address host:port"),
    threads: int = typer.Option(1, "--threads", help="onnxruntime and BLAS threads per worker"),
    channels: str = typer.Option("mix", "--channels", help="mix (one timeline per file) or split (one per channel)"),
    channel_names: str | None = typer.Option(None, "--channel-names", help="with split: e.g. agent,customer"),
    step: float = typer.Option(0.5, "--step", help="timeline grid step, seconds"),
    smoothing: str = typer.Option("ema", "--smoothing", help="ema, median or none"),
    aggressiveness: int = typer.Option(2, "--aggressiveness", help="webrtcvad mode 0..3"),
    threshold: float = typer.Option(0.5, "--threshold", help="peak threshold on smoothed p(angry)"),
    ext: str | None = typer.Option(None, "--ext", help="file endings to take, e.g. wav,flac (default: all audio)"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="run files an earlier run recorded as failed"),
    limit: int | None = typer.Option(None, "--limit", help="at most this many files in this run"),
    max_duration: float | None = typer.Option(
        None, "--max-duration", help="record longer files as failed, unread (seconds; default: no limit)"
    ),
    part_files: int = typer.Option(64, "--part-files", help="files per Parquet part"),
    processor: str = typer.Option(
        DEFAULT_PROCESSOR,
        "--processor",
        help="per-file processor class, module:Class (a subclass of ser.batch.worker.FileProcessor, e.g. with its "
        "own decode); every worker must be able to import it",
    ),
    as_json: bool = typer.Option(False, "--json", help="print the run's counts as JSON (no progress bar)"),
) -> None:
    """Emotion timelines of every recording of an archive, as Parquet: one row per voiced segment, one summary
    row per file (and channel) with its voiced share, shares per emotion and anger peaks.

    Resumable: files already in --out are skipped, so a killed run picks up where it stopped. A file that cannot be
    analysed (corrupt, unreadable, mono with --channels split) is recorded with its reason and the run goes on; the
    exit code is 1 when any file failed in this run. Inference is onnxruntime only.

    Example: ser batch calls/ --out scores/ --workdir runs --workers 2

    Example: ser batch gs://bucket/calls --out gs://bucket/scores --ray auto --channels split
    """
    from ser.batch.archive import AUDIO_EXTENSIONS
    from ser.jobs.batch import BatchJob
    from ser.timeline import TimelineConfig, parse_channel_names
    from ser.vad import VadConfig

    cfg = TimelineConfig(
        vad=VadConfig(aggressiveness=aggressiveness),
        step_s=step,
        smoothing=smoothing,  # type: ignore[arg-type]  # checked by TimelineConfig
        peak_threshold=threshold,
    )
    job = BatchJob(
        archive=archive,
        out=out,
        model_dir=model_dir_of(model, workdir, ref),
        timeline=cfg,
        channels=channels,  # type: ignore[arg-type]  # checked by BatchJob
        channel_names=parse_channel_names(channel_names),
        workers=workers,
        ray=ray,
        threads=threads,
        extensions=tuple(e for e in (ext or "").split(",") if e.strip()) or AUDIO_EXTENSIONS,
        part_files=part_files,
        retry_failed=retry_failed,
        limit=limit,
        max_duration_s=max_duration,
        processor=processor,
        progress=not as_json,
    )
    res = job.run()
    if as_json:
        print_json(res.to_dict())
    else:
        console.print(
            f"{res.files} files in {res.archive}: {res.ok} analysed, {res.failed} failed, {res.skipped} done before"
            + (f", {res.remaining} left (--limit)" if res.remaining else "")
            + f"; {res.segments} segments, {res.audio_s / 3600:.2f} h of audio in {res.wall_s:.1f} s"
            + f" ({res.model_name} v{res.model_version}, {res.executor}) → {res.out}",
            highlight=False,
        )
        for file, reason in res.failures:
            console.print(f"failed: {file}: {reason}", highlight=False, markup=False)
    if res.failed:
        raise typer.Exit(1)
