"""A local DAG runner with a cache per stage.

Each stage's *key* hashes its name, its code version, the slice of the config it reads and the keys of the stages
it depends on (ingest also hashes a fingerprint of the corpus files). Its artefacts live in
``WORKDIR/stages/<stage>/<key>/`` and ``stage.json`` there, written atomically after the stage finished, marks
it done: a re-run with nothing changed only reads those records, and changing a training parameter changes the
keys of train and what follows, not of ingest or features. A stage killed half-way leaves no ``stage.json``; it
runs again on the next call and resumes what it can (the feature cache is content-addressed, training resumes
from its last checkpoint, cross-validation from the last finished fold).

Structured logs go to ``WORKDIR/logs/pipeline.jsonl`` (one JSON object per event); every run's summary to
``WORKDIR/logs/run-<time>.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ser.errors import SerError
from ser.io import write_json
from ser.pipeline.config import PipelineConfig, config_hash

RECORD = "stage.json"


@dataclass
class StageContext:
    """What a stage function gets: the config, its own folder, its dependencies' records, and helpers."""

    cfg: PipelineConfig
    workdir: Path
    out: Path
    inputs: dict[str, dict[str, Any]]
    progress: bool = False
    log: Callable[..., None] = lambda *a, **k: None

    def path(self, stage: str, key: str) -> Path:
        """Absolute path of output ``key`` of dependency ``stage``."""
        return Path(self.inputs[stage]["outputs"][key])


@dataclass(frozen=True)
class Stage:
    """A node of the DAG. ``fn(ctx)`` returns ``{"outputs": {name: path or value}, "metric": str, ...}``."""

    name: str
    fn: Callable[[StageContext], dict[str, Any]]
    deps: tuple[str, ...] = ()
    config: Callable[[PipelineConfig], Any] = lambda cfg: None
    version: str = "1"
    fingerprint: Callable[[PipelineConfig], Any] | None = None
    """Extra key material computed at run time (e.g. a listing of the corpus files)."""


@dataclass
class StageResult:
    name: str
    key: str
    status: str  # ran | cached | failed
    seconds: float
    metric: str = ""
    record: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class RunSummary:
    workdir: Path
    results: list[StageResult]
    started: str
    seconds: float

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.results)

    def record(self, stage: str) -> dict[str, Any]:
        return next(r.record for r in self.results if r.name == stage)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workdir": str(self.workdir),
            "started": self.started,
            "seconds": round(self.seconds, 2),
            "ok": self.ok,
            "stages": [
                {
                    "stage": r.name,
                    "status": r.status,
                    "seconds": round(r.seconds, 2),
                    "metric": r.metric,
                    "key": r.key,
                    **({"error": r.error} if r.error else {}),
                }
                for r in self.results
            ],
            "result": next((r.record.get("result") for r in self.results if r.name == "register"), None),
        }


def topological(stages: Iterable[Stage]) -> list[Stage]:
    """Stages ordered so that each comes after its dependencies; unknown dependencies and cycles raise."""
    by_name = {s.name: s for s in stages}
    order: list[Stage] = []
    state: dict[str, int] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name not in by_name:
            raise SerError(f"stage {chain[-1]!r} depends on unknown stage {name!r}")
        if state.get(name) == 1:
            raise SerError(f"dependency cycle: {' → '.join((*chain, name))}")
        if state.get(name) == 2:
            return
        state[name] = 1
        for d in by_name[name].deps:
            visit(d, (*chain, name))
        state[name] = 2
        order.append(by_name[name])

    for s in by_name:
        visit(s, ())
    return order


def stage_keys(stages: list[Stage], cfg: PipelineConfig) -> dict[str, str]:
    """The cache key of every stage (dependencies first)."""
    keys: dict[str, str] = {}
    for s in topological(stages):
        material = {
            "stage": s.name,
            "version": s.version,
            "config": s.config(cfg),
            "deps": [keys[d] for d in s.deps],
            "fingerprint": s.fingerprint(cfg) if s.fingerprint else None,
        }
        keys[s.name] = config_hash(material)
    return keys


class JsonLog:
    """Append-only structured log (JSON lines), flushed per event."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: str, **fields: Any) -> None:
        rec = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "event": event, **fields}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")


def read_record(folder: Path) -> dict[str, Any] | None:
    path = folder / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return None  # unreadable: run the stage again


def _run_stage(s: Stage, key: str, ctx: StageContext, log: JsonLog) -> StageResult:
    """Run one stage into ``ctx.out`` and write its record; a :class:`~ser.errors.SerError` becomes a failed
    result (logged), any other exception is a bug and propagates."""
    log("stage_start", stage=s.name, key=key)
    t0 = time.perf_counter()
    ctx.out.mkdir(parents=True, exist_ok=True)
    try:
        out = s.fn(ctx) or {}
    except SerError as exc:
        secs = time.perf_counter() - t0
        msg = str(exc) or type(exc).__name__
        log("stage_failed", stage=s.name, key=key, seconds=round(secs, 2), error=msg)
        return StageResult(s.name, key, "failed", secs, error=msg)
    except Exception as exc:
        log("stage_failed", stage=s.name, key=key, seconds=round(time.perf_counter() - t0, 2), error=str(exc))
        raise
    secs = time.perf_counter() - t0
    rec = {
        "stage": s.name,
        "key": key,
        "seconds": round(secs, 3),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "outputs": {},
        "metric": "",
        **out,
    }
    write_json(ctx.out / RECORD, rec)
    log("stage_end", stage=s.name, key=key, seconds=round(secs, 2), metric=rec.get("metric", ""))
    return StageResult(s.name, key, "ran", secs, rec.get("metric", ""), rec)


def run_pipeline(
    stages: list[Stage],
    cfg: PipelineConfig,
    workdir: str | Path,
    *,
    only: Iterable[str] | None = None,
    force: Iterable[str] = (),
    progress: bool = False,
    on_stage: Callable[[str, str], None] | None = None,
) -> RunSummary:
    """Run the stages in dependency order, each one at most once per key.

    ``only``: run just these stages (their dependencies must be done already: how an Airflow task runs one
    stage); ``force``: re-run these stages even when their record exists. ``on_stage(name, "start"|"end")`` is
    called around each stage (for a progress display). A failing stage stops the run; its error is in the
    summary and the log, and the stages after it are not run.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ordered = topological(stages)
    keys = stage_keys(ordered, cfg)
    wanted = set(only) if only is not None else {s.name for s in ordered}
    unknown = wanted - set(keys)
    if unknown:
        raise SerError(f"unknown stage(s): {', '.join(sorted(unknown))}; stages: {', '.join(keys)}")
    force = set(force)
    log = JsonLog(workdir / "logs" / "pipeline.jsonl")
    started = dt.datetime.now(dt.UTC)
    t_run = time.perf_counter()
    log("run_start", stages=[s.name for s in ordered if s.name in wanted], pid=os.getpid())
    records: dict[str, dict[str, Any]] = {}
    results: list[StageResult] = []
    for s in ordered:
        folder = workdir / "stages" / s.name / keys[s.name]
        rec = read_record(folder)
        if s.name not in wanted:
            if rec is not None:
                records[s.name] = rec
            continue
        missing = [d for d in s.deps if d not in records]
        if missing:
            raise SerError(f"stage {s.name}: upstream {', '.join(missing)} has not run for this config; run it first")
        if rec is not None and s.name not in force:
            records[s.name] = rec
            results.append(StageResult(s.name, keys[s.name], "cached", 0.0, rec.get("metric", ""), rec))
            log("stage_cached", stage=s.name, key=keys[s.name])
            continue
        if on_stage:
            on_stage(s.name, "start")
        ctx = StageContext(
            cfg,
            workdir,
            folder,
            {d: records[d] for d in s.deps},
            progress,
            lambda event, _s=s.name, **kw: log(event, stage=_s, **kw),
        )
        try:
            result = _run_stage(s, keys[s.name], ctx, log)
        finally:
            if on_stage:
                on_stage(s.name, "end")
        results.append(result)
        if result.status == "failed":
            break
        records[s.name] = result.record
    summary = RunSummary(workdir, results, started.isoformat(timespec="seconds"), time.perf_counter() - t_run)
    log("run_end", ok=summary.ok, seconds=round(summary.seconds, 2))
    write_json(workdir / "logs" / f"run-{started.strftime('%Y%m%dT%H%M%S%f')}.json", summary.to_dict())
    return summary
