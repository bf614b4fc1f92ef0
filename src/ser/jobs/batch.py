"""The batch job: the emotion timeline of every recording of an archive → partitioned Parquet (``ser batch``).

archive → the files not done yet (resume) → per-file timelines on the executor (in-process, a local process pool,
or Ray) → parts of the segments and files tables, written as results stream back. See :mod:`ser.batch` for the
steps and :mod:`ser.batch.store` for the output folder and how a killed run resumes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ser.batch.archive import AUDIO_EXTENSIONS, Recording
from ser.batch.core import FileResult
from ser.batch.store import check_output
from ser.batch.worker import DEFAULT_PROCESSOR, processor_class
from ser.errors import ConfigError
from ser.timeline import Channels, TimelineConfig

MAX_REPORTED_FAILURES = 20


@dataclass(frozen=True)
class BatchOutcome:
    """Counts of one run. ``files``: recordings in the archive; ``skipped``: done by an earlier run; ``ok`` /
    ``failed``: analysed by this run (``failures``: the first :data:`MAX_REPORTED_FAILURES` as ``(file, reason)``);
    ``remaining``: left for a later run (``limit``); ``audio_s``: seconds of audio analysed; ``wall_s``: the
    run's wall time."""

    archive: str
    out: str
    model_name: str
    model_version: str
    executor: str
    files: int
    skipped: int
    ok: int
    failed: int
    remaining: int
    segments: int
    parts: int
    audio_s: float
    wall_s: float
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def audio_hours_per_hour(self) -> float:
        """Hours of audio analysed per hour of wall time (0 when nothing ran)."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failures"] = [{"file": f, "reason": r} for f, r in self.failures]
        d["audio_hours_per_hour"] = round(self.audio_hours_per_hour, 3)
        return d


@dataclass(frozen=True)
class BatchJob:
    """Timelines of every recording under ``archive`` (a folder, a file or an fsspec URI) with the model folder
    ``model_dir``, written under ``out`` (:mod:`ser.batch.store`).

    ``channels``: ``mix`` (one timeline per file) or ``split`` (one per channel, named by ``channel_names``, default
    ``ch0``, ``ch1``, ...). ``workers``: local processes (1: in this process); ``ray``: run on Ray instead: ``auto``,
    ``local`` (a local cluster of ``workers`` CPUs, all cores when ``workers`` is 1) or a cluster address.
    ``threads``: onnxruntime and BLAS threads per worker. A part is written every ``part_files`` files or
    ``part_seconds`` seconds, whichever comes first (a killed run loses at most that). ``retry_failed``: run the
    files an earlier run recorded as failed again. ``limit``: at most this many files in this run (the rest is left
    for a later one). ``max_duration_s``: a longer recording is recorded as failed, unread (a worker holds a whole
    recording in memory: about 230 MB per hour of audio and channel at 16 kHz). ``processor``: the per-file
    :class:`ser.batch.worker.FileProcessor` (sub)class as ``module:Class`` (every worker must be able to import it).
    ``out``: a local folder or an fsspec URI (:mod:`ser.batch.store` says which protocols)."""

    archive: str
    out: str | Path
    model_dir: Path
    timeline: TimelineConfig = field(default_factory=TimelineConfig)
    channels: Channels = "mix"
    channel_names: tuple[str, ...] = ()
    workers: int = 1
    ray: str | None = None
    threads: int = 1
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS
    part_files: int = 64
    part_seconds: float = 30.0
    retry_failed: bool = False
    limit: int | None = None
    max_duration_s: float | None = None
    processor: str = DEFAULT_PROCESSOR
    progress: bool = False

    def __post_init__(self) -> None:
        if self.channels not in ("mix", "split"):
            raise ConfigError(f"--channels must be mix or split, got {self.channels!r}")
        if self.channel_names and self.channels != "split":
            raise ConfigError("--channel-names needs --channels split")
        for name, value in (("--workers", self.workers), ("--threads", self.threads), ("part_files", self.part_files)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            raise ConfigError(f"--max-duration must be > 0 s, got {self.max_duration_s:g}")
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"--limit must be >= 0, got {self.limit}")
        if self.ray is not None and not self.ray.strip():
            raise ConfigError("--ray needs auto, local or a cluster address")
        processor_class(self.processor)  # a clear error here rather than in every worker
        check_output(self.out)

    def settings(self) -> dict[str, Any]:
        """What the rows depend on besides the model (recorded in the output folder, checked on resume)."""
        settings: dict[str, Any] = {
            "channels": self.channels,
            "channel_names": list(self.channel_names),
            "timeline": asdict(self.timeline),
        }
        if self.processor != DEFAULT_PROCESSOR:  # recorded only when set, so folders of earlier runs still resume
            settings["processor"] = self.processor
        return settings

    def run(self) -> BatchOutcome:
        from ser.audio import DecodeLimits
        from ser.batch.archive import list_recordings
        from ser.batch.store import BatchStore
        from ser.batch.worker import WorkerSettings, model_identity
        from ser.inference import Predictor
        from ser.progress import track

        t0 = time.perf_counter()
        model = model_identity(self.model_dir)
        Predictor(self.model_dir, warmup=False)  # the model loads here before any worker starts: a clear error
        recordings = list_recordings(self.archive, self.extensions)
        store = BatchStore(self.out, model, self.settings())
        done = store.open()
        if self.retry_failed and store.forget_failed():
            done = store.done()
        todo = [r for r in recordings if r.file not in done]
        skipped = len(recordings) - len(todo)
        remaining = 0
        if self.limit is not None and len(todo) > self.limit:
            todo, remaining = todo[: self.limit], len(todo) - self.limit
        limits = DecodeLimits(max_s=self.max_duration_s)
        settings = WorkerSettings(
            self.timeline, self.channels, self.channel_names, limits, self.threads, self.processor
        )
        results = track(self._execute(settings, todo, model["sha256"]), "batch", len(todo), self.progress)
        tally = _Tally()
        buffer: list[FileResult] = []
        last = time.monotonic()
        try:
            for res in results:
                tally.add(res)
                buffer.append(res)
                if len(buffer) >= self.part_files or time.monotonic() - last >= self.part_seconds:
                    tally.parts += store.write(buffer) is not None
                    buffer, last = [], time.monotonic()
        finally:  # an error or Ctrl-C keeps the files finished so far
            tally.parts += store.write(buffer) is not None
        return BatchOutcome(
            archive=self.archive,
            out=str(self.out),
            model_name=model["name"],
            model_version=model["version"],
            executor=self.executor(),
            files=len(recordings),
            skipped=skipped,
            ok=tally.ok,
            failed=tally.failed,
            remaining=remaining,
            segments=tally.segments,
            parts=tally.parts,
            audio_s=tally.audio_s,
            wall_s=time.perf_counter() - t0,
            failures=tally.failures,
        )

    def executor(self) -> str:
        if self.ray is not None:
            return f"ray ({self.ray})"
        return "in-process" if self.workers == 1 else f"process pool ({self.workers} workers)"

    def _execute(self, settings: Any, todo: list[Recording], key: str) -> Any:
        from ser.batch.executors import RayTarget, run_inline, run_pool, run_ray

        if not todo:
            return iter(())
        if self.ray is not None:
            target = RayTarget(self.ray.strip(), self.workers if self.workers > 1 else None)
            return run_ray(self.model_dir, settings, todo, target, key)
        if self.workers == 1:
            return run_inline(self.model_dir, settings, todo)
        return run_pool(self.model_dir, settings, todo, min(self.workers, len(todo)))


@dataclass
class _Tally:
    ok: int = 0
    failed: int = 0
    segments: int = 0
    parts: int = 0
    audio_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def add(self, res: FileResult) -> None:
        self.segments += len(res.segments)
        self.audio_s += res.audio_s
        if res.ok:
            self.ok += 1
            return
        self.failed += 1
        if len(self.failures) < MAX_REPORTED_FAILURES:
            self.failures.append((res.file, res.reason or "unknown"))
