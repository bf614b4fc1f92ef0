"""The closed loop, one pass: monitor → (when drift is flagged or enough new feedback has arrived) retrain → gate →
promote. ``ser loop run --config loop.yaml`` runs one pass (for cron or a systemd timer); the monitoring DAG
(``dags/ser_monitoring.py``) runs the same check and hands the retraining to ``ser_retraining``.

A pass (:meth:`LoopJob.run`):

1. **check** (:meth:`LoopJob.check`): the monitoring report of the last ``since`` of the prediction log against
   the reference model (:class:`~ser.jobs.monitor.MonitorReportJob`; flagged = a threshold of the loop's
   ``drift`` block crossed), and the feedback that arrived since the last retrain (distinct prediction ids with a
   feedback record newer than the state file's watermark);
2. **decide** (:func:`triggers`, pure): retrain when the report is flagged (``on_drift``) or at least
   ``min_new_feedback`` new labelled answers arrived (0: never on feedback), or when there is no model to monitor
   yet (the first pass of a fresh workdir trains the first one);
3. **retrain**: the training pipeline on ``pipeline`` (a pipeline YAML) in ``workdir``, through the ``retrain``
   callable the caller gives (:func:`ser.pipeline.retrain`; the jobs layer does not import the pipeline). Its
   register stage applies the promotion gate; the loop writes no gate of its own. The pipeline is cached: with
   the corpus unchanged every stage is read from its record and nothing new is registered (``new: false``);
   new data in the corpus (the feedback clips) re-runs ingest and everything after it;
4. **record**: the pass (what was checked, whether it triggered and why, the pipeline result, the registry
   decision) as one JSON line in ``events`` (default ``WORKDIR/loop/events.jsonl``); after a successful retrain the
   feedback watermark in ``state`` (default ``WORKDIR/loop/state.json``) moves to the pass's start, so the same
   feedback never triggers twice. A failed pipeline run leaves the watermark: the next pass tries again.

Feedback is counted by its arrival time (the feedback log's ``ts``); a bulk import that back-dates its rows
(``ts`` column) before the watermark is not counted as new.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ser.errors import ConfigError, SerError, validation_reason
from ser.monitor.drift import DriftConfig

STATE_FORMAT = "ser-loop-state/1"
EVENT_FORMAT = "ser-loop-event/1"

Retrain = Callable[[str | None, Path], dict[str, Any]]
"""``retrain(pipeline_config_path, workdir)`` → the run summary (:meth:`ser.pipeline.runner.RunSummary.to_dict`)."""


class LoopConfig(BaseModel):
    """The ``loop:`` block of a loop YAML file. Relative paths are relative to that file."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    workdir: str = Field(..., description="the production workdir: registry, stages, MLflow")
    log: str | None = Field(None, description="prediction log root (folder or fsspec URI) [WORKDIR/monitor]")
    model: str = Field("ser-emotion@champion", description="the monitored model: registry reference or a folder")
    since: str = Field("24h", description="monitoring window: a span back (24h, 7d) or an ISO time")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="the report's thresholds (DriftConfig)")
    on_drift: bool = Field(True, description="retrain when the monitoring report is flagged")
    min_new_feedback: int = Field(200, ge=0, description="retrain when this many new labelled answers arrived; 0: off")
    pipeline: str | None = Field(None, description="pipeline config YAML of the retraining (required to retrain)")
    events: str | None = Field(None, description="the pass log (JSON lines) [WORKDIR/loop/events.jsonl]")
    state: str | None = Field(None, description="the feedback watermark [WORKDIR/loop/state.json]")
    reports: str | None = Field(None, description="where each pass's report goes [WORKDIR/loop/reports]")
    keep_reports: int = Field(48, ge=1, description="the latest reports kept (older pass folders are deleted)")

    @field_validator("since")
    @classmethod
    def _since(cls, value: str) -> str:
        from ser.monitor.store import utc

        try:
            utc(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def log_root(self) -> str:
        return self.log or str(Path(self.workdir) / "monitor")

    @property
    def events_path(self) -> Path:
        return Path(self.events) if self.events else Path(self.workdir) / "loop" / "events.jsonl"

    @property
    def state_path(self) -> Path:
        return Path(self.state) if self.state else Path(self.workdir) / "loop" / "state.json"

    @property
    def reports_dir(self) -> Path:
        return Path(self.reports) if self.reports else Path(self.workdir) / "loop" / "reports"


def parse_loop_config(data: dict[str, Any], source: str = "loop config", base: Path | None = None) -> LoopConfig:
    """The ``loop:`` block of ``data`` (a loop YAML's mapping); relative paths resolved against ``base``. A bad
    value is a :class:`ConfigError` naming the field, e.g. ``loop.min_new_feedback``."""
    block = data.get("loop") if isinstance(data, dict) else None
    if not isinstance(block, dict):
        raise ConfigError(f"{source}: expected a 'loop:' mapping (workdir, log, model, since, drift, pipeline, ...)")
    try:
        cfg = LoopConfig.model_validate(block)
    except ValidationError as exc:
        raise ConfigError(f"{source}: loop.{validation_reason(exc)}") from None
    if base is None:
        return cfg
    update = {}
    for name in ("workdir", "log", "pipeline", "events", "state", "reports"):
        value = getattr(cfg, name)
        if value and "://" not in value and not Path(value).expanduser().is_absolute():
            update[name] = str((base / value).resolve())
    return cfg.model_copy(update=update)


def load_loop_config(path: str | Path) -> LoopConfig:
    """The loop config in YAML file ``path`` (its ``loop:`` block)."""
    from ser.io import read_yaml_mapping

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"loop config not found: {p}")
    return parse_loop_config(read_yaml_mapping(p, "sections (loop: ...)"), str(p), p.parent)


# ----------------------------------------------------------------------------------------------------------------
# the check and the decision


@dataclass(frozen=True)
class LoopCheck:
    """What a pass looked at: the report (``monitor``: flagged, reasons, predictions, feedback, report path; or
    ``error`` when there is no model to monitor), the new feedback since ``watermark``, and the ``reasons`` to
    retrain (empty: no trigger)."""

    started: str
    monitor: dict[str, Any]
    new_feedback: int
    watermark: str | None
    reasons: list[str]

    @property
    def triggered(self) -> bool:
        return bool(self.reasons)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopCheck:
        """A check back from :meth:`to_dict` (an XCom of the monitoring DAG)."""
        return cls(d["started"], dict(d["monitor"]), int(d["new_feedback"]), d.get("watermark"), list(d["reasons"]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "monitor": self.monitor,
            "new_feedback": self.new_feedback,
            "watermark": self.watermark,
            "triggered": self.triggered,
            "reasons": self.reasons,
        }


def triggers(monitor: dict[str, Any], new_feedback: int, cfg: LoopConfig) -> list[str]:
    """Why to retrain (pure): no model to monitor, a flagged report (``on_drift``), or ``min_new_feedback`` new
    labelled answers; empty when none holds."""
    out: list[str] = []
    if monitor.get("error"):
        out.append(f"no model to monitor ({monitor['error']}): training one")
    elif cfg.on_drift and monitor.get("flagged"):
        out.append("monitoring report flagged: " + "; ".join(monitor.get("reasons") or []))
    if cfg.min_new_feedback and new_feedback >= cfg.min_new_feedback:
        out.append(f"{new_feedback} new labelled answers since the last retrain (threshold {cfg.min_new_feedback})")
    return out


def count_new_feedback(log_root: str, since: dt.datetime | None) -> int:
    """Distinct prediction ids with a feedback record that arrived after ``since`` (all when None)."""
    from ser.monitor.feedback import read_feedback

    try:
        fb = read_feedback(log_root)
    except FileNotFoundError:
        return 0
    if fb.num_rows == 0:
        return 0
    t = fb.select(["prediction_id", "ts"]).to_pandas()
    if since is not None:
        t = t[t["ts"] > since]
    return int(t["prediction_id"].nunique())


def prune_reports(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` latest pass folders (named by time) under ``folder``."""
    import shutil

    if not folder.is_dir():
        return
    passes = sorted(p for p in folder.iterdir() if p.is_dir() and p.name[:8].isdigit())
    for old in passes[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def read_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SerError(
            f"loop state {path} is unreadable ({exc}); fix or delete it (a fresh state counts all feedback)"
        ) from None
    return data if isinstance(data, dict) else {}


def append_event(path: Path, event: dict[str, Any]) -> None:
    """One JSON line, flushed and synced (a pass is rare; losing its record is not)."""
    import os

    from ser.io import json_default

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(event, default=json_default) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The passes recorded in an events file (a line cut by a kill is skipped)."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


# ----------------------------------------------------------------------------------------------------------------
# the job


@dataclass(frozen=True)
class LoopOutcome:
    """One pass: the check, whether it retrained (``retrained``), the pipeline's run summary (``pipeline``), the
    registry decision (``decision``: name, version, alias, reason, uar, ``new``: registered by this pass, and the
    aliases after it), and ``error`` when the pipeline failed."""

    check: LoopCheck
    retrained: bool = False
    pipeline: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    error: str | None = None
    events_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": EVENT_FORMAT,
            **self.check.to_dict(),
            "retrained": self.retrained,
            "pipeline": self.pipeline,
            "decision": self.decision,
            "error": self.error,
            **self.extra,
        }


@dataclass(frozen=True)
class LoopJob:
    """One pass of the closed loop over ``config`` (module docstring). ``retrain``: how to run the pipeline
    (:func:`ser.pipeline.retrain`); None only for :meth:`check`. ``now``: the pass's time (tests)."""

    config: LoopConfig
    retrain: Retrain | None = None
    now: dt.datetime | None = None

    def check(self) -> LoopCheck:
        """Report + new feedback + the decision; writes the report under ``reports/<time>/``, nothing else."""
        from ser.jobs.monitor import MonitorReportJob, resolve_model
        from ser.monitor.store import utc

        cfg = self.config
        now = self.now or dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        state = read_state(cfg.state_path)
        mark = state.get("feedback_watermark")
        watermark = dt.datetime.fromisoformat(mark) if mark else None
        since = utc(cfg.since, now=now)
        monitor: dict[str, Any] = {"model": cfg.model}
        try:
            model_dir = resolve_model(cfg.model, cfg.workdir)
        except SerError as exc:  # no champion yet: the only failure that makes a pass train (a first model)
            monitor.update(error=str(exc), flagged=False, reasons=[])
        else:  # a report that fails (an unreadable log) fails the pass: it is no reason to retrain
            job = MonitorReportJob(cfg.log_root, model_dir, cfg.reports_dir / stamp, since, now, cfg.drift)
            monitor.update(job.run().summary())
        prune_reports(cfg.reports_dir, cfg.keep_reports)
        new = count_new_feedback(cfg.log_root, watermark)
        return LoopCheck(now.isoformat(timespec="seconds"), monitor, new, mark, triggers(monitor, new, cfg))

    def run(self) -> LoopOutcome:
        """One pass: check, retrain when triggered, record it (events + state)."""
        check = self.check()
        if not check.triggered:
            return self._record(LoopOutcome(check))
        if self.retrain is None:
            raise SerError("LoopJob.run needs a retrain function (ser.pipeline.retrain)")
        cfg = self.config
        if not cfg.pipeline:
            outcome = LoopOutcome(check, error="triggered, but loop.pipeline names no pipeline config to retrain")
            return self._record(outcome)
        try:
            summary = self.retrain(cfg.pipeline, Path(cfg.workdir))
        except SerError as exc:  # a bad pipeline config, a corpus that is gone: recorded, tried again next pass
            return self._record(LoopOutcome(check, retrained=True, error=str(exc)))
        error = None if summary.get("ok") else _failed_stage(summary)
        decision = None if error else registry_decision(summary, Path(cfg.workdir))
        return self._record(LoopOutcome(check, True, summary, decision, error))

    def request(self, check: LoopCheck, requested: str) -> LoopOutcome:
        """Record a pass whose retraining runs elsewhere (the monitoring DAG: ``requested`` names the asset event
        that schedules ``ser_retraining``; empty when it did not trigger): the event, and, when triggered, the
        feedback watermark moved as after a retrain."""
        return self._record(LoopOutcome(check, extra={"requested": requested} if check.triggered else {}))

    def _record(self, outcome: LoopOutcome) -> LoopOutcome:
        cfg = self.config
        advance = outcome.check.triggered and outcome.ok and (outcome.retrained or "requested" in outcome.extra)
        if advance:
            from ser.io import write_json

            state = {**read_state(cfg.state_path), "format": STATE_FORMAT}
            state["feedback_watermark"] = outcome.check.started
            state["last_retrain"] = outcome.check.started
            write_json(cfg.state_path, state)
        append_event(cfg.events_path, outcome.to_dict())
        return LoopOutcome(
            outcome.check,
            outcome.retrained,
            outcome.pipeline,
            outcome.decision,
            outcome.error,
            cfg.events_path,
            outcome.extra,
        )


def _failed_stage(summary: dict[str, Any]) -> str:
    failed = [s for s in summary.get("stages", []) if s.get("status") == "failed"]
    if not failed:
        return "the pipeline run did not finish"
    return f"stage {failed[0]['stage']} failed: {failed[0].get('error')}"


def registry_decision(summary: dict[str, Any], workdir: Path) -> dict[str, Any] | None:
    """The register stage's result of a run summary, with ``new`` (registered by this run, not read from the
    cache) and the model's aliases now."""
    from ser import registry

    result = summary.get("result")
    if not result:
        return None
    status = next((s["status"] for s in summary.get("stages", []) if s.get("stage") == "register"), None)
    return {**result, "new": status == "ran", "aliases": registry.read_aliases(workdir, result["name"])}
