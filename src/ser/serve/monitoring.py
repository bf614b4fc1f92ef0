"""The service side of monitoring (:mod:`ser.monitor`): prediction ids, the prediction log, feedback, the live
drift / accuracy gauges and the shadow model.

:class:`ServiceMonitor` (``app.state.monitor``) is opened in the app's lifespan and closed (its logs flushed) at
shutdown. The routes call :meth:`ServiceMonitor.answered` from their worker threads, after the model's answer:
it issues the answer's ``prediction_id`` (UUIDv7, :func:`ser.monitor.ids.new_id`), computes the input statistics
(:func:`ser.monitor.stats.input_stats`, from the decoded audio and the model's own log-mel rows), queues one
record (:meth:`ser.monitor.log.PredictionLog.log`: never blocks, never raises; a background thread writes
Parquet every ``prediction_log_flush_s``), feeds the live gauges (:class:`ser.monitor.live.LiveMonitor`) and
hands a sampled share to the shadow model (:class:`ShadowRunner`, its own bounded thread: never delays or fails
the request). Nothing here raises into a request: a failure is logged and the answer goes out without its record.

**Where the log goes** (:func:`log_root`): ``SER_PREDICTION_LOG`` (a folder or fsspec URI; a path ending in
``/predictions`` names the predictions table, the log root being the folder above it; ``off`` disables it), else
``<workdir>/monitor`` when serving a workdir's registry, else (``--model DIR``) off: a model folder is a release
artefact, often read-only, and not the place for traffic. Feedback is written beside the predictions
(``<root>/feedback``). Never audio, never a file name: the client's file name is stored as an HMAC under
``prediction_log_salt`` (random per process when unset).

**Shadow** (``shadow_ref``): the second model's records carry ``role = "shadow"`` (a column of the log schema),
its own ``model_name`` / ``model_version`` and the primary answer's ``prediction_id``; the input statistics are
the primary's (same input).

**Canary** (``shadow_ref`` with ``shadow_mode = canary``, :class:`CanaryRunner`): the second model answers
``canary_share`` of ``/v1/predict`` and ``/v1/predict/batch`` requests itself (sticky per ``X-Client-Id``, else
random per request: :func:`ser.monitor.canary.assigned`); its answers carry its version (``model_version``) and
are logged with ``role = "canary"``. A canary that fails in the model (an exception) is counted as an error and
the champion answers instead; a time-out is counted and answered 504. Streams and timelines stay on the champion.
**Automatic rollback** (:class:`ser.monitor.canary.RollbackRule`): when its error rate or its live UAR (from
``POST /v1/feedback``) is worse than the champion's by the set margin over the minimum counts, this process stops
routing to it and records why: a WARNING log line, ``ser_canary_active{model_version} 0`` and
``ser_canary_rollbacks_total{model_version,cause}``, and an event file under ``<log root>/canary/``
(:func:`ser.monitor.canary.record_rollback`), which every worker process and every restart reads: a rolled-back
version is never routed to again (a new canary version starts afresh). The registry is not touched (the service
only reads it): the challenger alias stays where it is, and the event says which version to demote.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ser.inference import Predictor
from ser.monitor.canary import (
    CANARY,
    CHAMPION,
    CanaryGuard,
    RollbackRule,
    assigned,
    read_rollbacks,
    record_rollback,
)
from ser.monitor.feedback import FeedbackLog, FeedbackRecord, UnknownPrediction, check_id, validate_feedback
from ser.monitor.ids import new_id, ts_ms_of
from ser.monitor.live import LiveMonitor
from ser.monitor.log import PredictionLog, RecentIds, build_record, issued
from ser.monitor.stats import SCALAR_FIELDS, InputStats, input_stats, seen_logmel
from ser.serve.engine import ModelHolder, ModelNotReady, ReloadResult
from ser.serve.metrics import Metrics
from ser.serve.settings import SecondModel, Settings
from ser.uri import is_remote

log = logging.getLogger("ser.serve")

OFF = {"off", "none", "0", "false", "no"}
CANARY_ROUTES = ("/v1/predict", "/v1/predict/batch")
"""The routes a canary answers (streams and timelines stay on the champion)."""


def log_root(settings: Settings, workdir: str | Path | None = None) -> str | None:
    """The prediction log's root (holding ``predictions/`` and ``feedback/``) the settings name, or None (off);
    ``workdir``: the served workdir when ``settings.workdir`` is unset (the holder's default)."""
    value = (settings.prediction_log or "").strip()
    if value.lower() in OFF and value:
        return None
    if value:
        stripped = value.rstrip("/") or value
        if is_remote(stripped):
            head, _, tail = stripped.rpartition("/")
            return head if tail == "predictions" and head and not head.endswith(":/") else stripped
        p = Path(stripped)
        return str(p.parent) if p.name == "predictions" else str(p)
    if settings.model_dir is not None:
        return None
    wd = settings.workdir or workdir
    return None if wd is None else str(Path(wd) / "monitor")


class FeatureTap:
    """A ``predict_proba`` that keeps the model input of its last call (for the log-mel statistics)."""

    def __init__(self, predictor: Any):
        self.predictor = predictor
        self.features: np.ndarray | None = None

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        if not isinstance(self.predictor, Predictor):  # a wrapper (tests): its own predict_proba
            return np.asarray(self.predictor.predict_proba(audio))
        proba, self.features = self.predictor.proba_and_features(audio)
        return np.asarray(proba)

    def logmel(self) -> np.ndarray | None:
        return logmel_of(self.predictor, self.features)


def logmel_of(predictor: Any, features: np.ndarray | None) -> np.ndarray | None:
    """The log-mel rows of a predictor's model input ``features`` (None when there are none or they hold no
    log-mel: the statistics then compute it)."""
    pre = getattr(predictor, "pre", None)
    if features is None or pre is None:
        return None
    return seen_logmel(features, pre.kind, int(pre.feature_config.get("n_mels", 64)))


class ShadowRunner:
    """Runs the second model on a sampled share of answers in its own thread (one at a time, at most
    ``max_pending`` waiting; more are skipped and counted in :attr:`skipped`), logs its answers with
    ``role="shadow"`` and counts agreement in ``ser_shadow_predictions_total``. Never returns anything to a
    client, never raises into a request."""

    def __init__(self, block: SecondModel, holder: ModelHolder, monitor: ServiceMonitor, *, max_pending: int = 32):
        self.block, self.holder, self.monitor = block, holder, monitor
        self.max_pending = max_pending
        self.pending = 0
        self.skipped = 0
        self.done = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ser-shadow")
        self._rng = random.Random()

    def sampled(self) -> bool:
        return self.block.share >= 1.0 or self._rng.random() < self.block.share

    def submit(self, pid: str, route: str, audio: np.ndarray, primary_label: str, stats: InputStats | None) -> bool:
        """Queue the shadow answer of one primary answer; False when skipped (not sampled, queue full, closed)."""
        if not self.sampled():
            return False
        with self._lock:
            if self.pending >= self.max_pending:
                self.skipped += 1
                return False
            self.pending += 1
        try:
            self._pool.submit(self._run, pid, route, audio, primary_label, stats)
        except RuntimeError:  # shut down
            with self._lock:
                self.pending -= 1
            return False
        return True

    def _run(self, pid: str, route: str, audio: np.ndarray, primary_label: str, stats: InputStats | None) -> None:
        try:
            p = self.holder.get()
            t0 = time.perf_counter()
            proba = np.asarray(p.predict_proba(audio), dtype=np.float64)
            ms = (time.perf_counter() - t0) * 1e3
            label = p.labels[int(np.argmax(proba))]
            self.monitor.metrics.shadow.labels(p.version, "true" if label == primary_label else "false").inc()
            if self.monitor.log is not None:
                rec = build_record(
                    route=route,
                    model_name=p.name,
                    model_version=p.version,
                    probabilities=proba.tolist(),
                    labels=list(p.labels),
                    duration_s=audio.size / p.sample_rate,
                    processing_ms=ms,
                    stats=stats,
                    prediction_id=pid,
                    role="shadow",
                )
                self.monitor.log.log(rec)
        except ModelNotReady:
            pass
        except Exception:
            log.exception("shadow prediction failed")
        finally:
            with self._lock:
                self.pending -= 1
                self.done += 1

    def drain(self, timeout: float = 30.0) -> None:
        """Wait (at most ``timeout`` s) until no shadow answer is pending (tests, benchmarks, shutdown)."""
        end = time.monotonic() + timeout
        while self.pending and time.monotonic() < end:
            time.sleep(0.005)

    def close(self) -> None:
        self.drain(10.0)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.holder.stop_polling()


class CanaryRunner:
    """The canary (module docstring): which requests it answers (:meth:`pick`), whose answer a predictor gave
    (:meth:`owns`), both sides' counts and labelled answers (a :class:`~ser.monitor.canary.CanaryGuard` per canary
    version), and the rollback."""

    def __init__(self, block: SecondModel, holder: ModelHolder, monitor: ServiceMonitor):
        from prometheus_client import Counter, Gauge

        self.block, self.holder, self.monitor = block, holder, monitor
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._mine: weakref.WeakSet[Any] = weakref.WeakSet()
        self.version: str | None = None
        self.guard: CanaryGuard | None = None
        self.rollback: dict[str, Any] | None = None
        r = monitor.metrics.registry
        self.active = Gauge(
            "ser_canary_active", "1 while the canary version gets traffic", ["model_version"], registry=r
        )
        self.requests = Counter(
            "ser_canary_requests",
            "Requests routed while a canary runs, by side (champion / canary), model version and result (ok / error)",
            ["side", "model_version", "result"],
            registry=r,
        )
        self.rollbacks = Counter(
            "ser_canary_rollbacks",
            "Canary rollbacks by version and cause (error_rate / live_uar)",
            ["model_version", "cause"],
            registry=r,
        )

    def _sync(self, p: Any) -> CanaryGuard:
        """The guard of the canary version ``p`` has (a new version: a new guard, unless it was rolled back)."""
        version = str(p.version)
        with self._lock:
            if self.guard is None or version != self.version:
                s = self.monitor.settings
                self.version, self.rollback = version, None
                rule = self.block.rollback or RollbackRule()
                self.guard = CanaryGuard(rule, max_ids=s.live_ids, window=s.drift_window)
                earlier = self._earlier_rollback(version)
                if earlier is not None:
                    self.rollback = earlier
                    self.guard.reason = str(earlier.get("reason"))
                    log.info(
                        "canary v%s stays off: rolled back at %s (%s)", version, earlier.get("time"), self.guard.reason
                    )
                self.active.labels(version).set(0 if self.rollback else 1)
            return self.guard

    def _earlier_rollback(self, version: str) -> dict[str, Any] | None:
        root = self.monitor.root
        if root is None:
            return None
        try:
            return next((e for e in reversed(read_rollbacks(root)) if str(e.get("version")) == version), None)
        except Exception as exc:  # an unreadable store must not stop the service
            log.warning("canary rollback events not readable under %s (%s)", root, exc)
            return None

    def pick(self, client_id: str | None = None) -> Any | None:
        """The canary's predictor when this request goes to it, else None (the champion answers): none loaded, rolled
        back, or not drawn."""
        p = self.holder.predictor
        if p is None:
            return None
        self._sync(p)
        if self.rollback is not None or not assigned(self.block.share, str(p.version), client_id, self._rng):
            return None
        self._mine.add(p)
        return p

    def owns(self, p: Any) -> bool:
        """Whether predictor ``p`` is a canary's (its answers are logged with ``role = canary``)."""
        return p in self._mine

    @property
    def running(self) -> bool:
        return self.guard is not None and self.rollback is None

    def served(self, side: str, version: str, ok: bool) -> None:
        guard = self.guard
        if guard is None or self.rollback is not None:
            return
        guard.served(side, ok)
        self.requests.labels(side, version, "ok" if ok else "error").inc()
        self._check(guard, uar=False)  # the error rates only: O(1) per request

    def predicted(self, pid: str, side: str, label: str | None) -> None:
        if self.running and self.guard is not None:
            self.guard.predicted(pid, side, label)

    def feedback(self, pid: str, label: str) -> None:
        guard = self.guard
        if guard is not None and self.rollback is None and guard.feedback(pid, label):
            self._check(guard, uar=True)

    def _check(self, guard: CanaryGuard, *, uar: bool) -> None:
        reason = guard.check(uar=uar)
        if reason is None:
            return
        with self._lock:
            if self.rollback is not None or guard is not self.guard:
                return
            sides = guard.sides()
            self.rollback = {
                "event": "canary_rollback",
                "time": _now_iso(),
                "version": self.version,
                "ref": self.block.ref,
                "champion_version": getattr(self.monitor.holder.predictor, "version", None),
                "cause": "error_rate" if reason.startswith("error rate") else "live_uar",
                "reason": reason,
                "sides": {k: v.to_dict() for k, v in sides.items()},
                "rule": self.block.rollback.model_dump() if self.block.rollback is not None else None,
            }
            event = self.rollback
        version = str(event["version"])
        self.active.labels(version).set(0)
        self.rollbacks.labels(version, event["cause"]).inc()
        log.warning("canary v%s rolled back, no more traffic to it: %s", version, reason)
        if self.monitor.root is not None:
            try:
                event["file"] = record_rollback(self.monitor.root, event)
            except Exception as exc:
                log.warning("canary rollback event not written under %s (%s)", self.monitor.root, exc)

    def close(self) -> None:
        self.holder.stop_polling()


def _now_iso() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class ServiceMonitor:
    """What the routes use to issue ids, log answers, take feedback and feed the live gauges (module docstring)."""

    def __init__(self, settings: Settings, holder: ModelHolder, metrics: Metrics):
        self.settings, self.holder, self.metrics = settings, holder, metrics
        self.root = log_root(settings, holder.workdir)
        self.salt = settings.prediction_log_salt or secrets.token_hex(16)
        self.recent = RecentIds(settings.live_ids)
        self.log: PredictionLog | None = None
        self.feedback_log: FeedbackLog | None = None
        self.live = LiveMonitor(
            metrics.publish_drift,
            metrics.publish_accuracy,
            window=settings.drift_window,
            interval_s=settings.drift_interval_s,
            max_ids=settings.live_ids,
        )
        self.shadow: ShadowRunner | None = None
        self.canary: CanaryRunner | None = None
        self.started = False
        metrics.stream_capacity.set(settings.max_streams)
        metrics.log_dropped.attach(lambda: self.log.dropped if self.log is not None else 0)
        holder.listeners.append(self.on_reload)

    # ------------------------------------------------------------------------------------------- life cycle

    def start(self) -> None:
        """Open the logs, start the live gauges' thread and the second model (its load in the background)."""
        if self.started:
            return
        self.started = True
        if self.root is not None:
            try:
                flush = self.settings.prediction_log_flush_s
                # recent=1: the ids issued are remembered once, in self.recent (also when the log is off)
                self.log = PredictionLog(self.root, flush_s=flush, recent=1)
                self.feedback_log = FeedbackLog(self.root, flush_s=flush)
                log.info("prediction log: %s (written every %g s)", self.root, flush)
            except Exception as exc:
                log.warning("prediction log off: cannot open %s (%s)", self.root, exc)
                self.log = self.feedback_log = None
        else:
            log.info("prediction log off")
        self.live.start()
        if self.holder.ready:
            self.on_model(self.holder.predictor)
        block = self.settings.second_model()
        if block is not None:
            runner: ShadowRunner | CanaryRunner
            if block.mode == "canary":
                runner = self.canary = CanaryRunner(block, self.second_holder(block), self)
            else:
                runner = self.shadow = ShadowRunner(block, self.second_holder(block), self)
            threading.Thread(target=runner.holder.reload, name=f"ser-{block.mode}-load", daemon=True).start()
            if self.settings.poll_s > 0:
                runner.holder.start_polling(self.settings.poll_s)

    def second_holder(self, block: SecondModel) -> ModelHolder:
        """The second model's holder: ``block.ref`` as a model folder when it is one, else a registry reference in
        the served workdir (the default workdir when serving a model folder)."""
        path = Path(block.ref).expanduser()
        if path.is_dir():
            return ModelHolder(path, threads=self.settings.threads)
        from ser.registry import default_workdir

        workdir = self.settings.workdir or self.holder.workdir or default_workdir()
        return ModelHolder(workdir=workdir, ref=block.ref, threads=self.settings.threads)

    def close(self) -> None:
        """Stop the shadow model, flush and close the logs, stop the gauges' thread."""
        if self.shadow is not None:
            self.shadow.close()
        if self.canary is not None:
            self.canary.close()
        for w in (self.log, self.feedback_log):
            if w is not None:
                try:
                    w.close()
                except Exception:
                    log.exception("closing the prediction log failed")
        self.live.close()

    def flush(self) -> None:
        """Write what is queued now (tests, benchmarks): shadow answers first, then both logs."""
        if self.shadow is not None:
            self.shadow.drain()
        for w in (self.log, self.feedback_log):
            if w is not None:
                w.flush()

    def on_reload(self, result: ReloadResult) -> None:
        if result.ok and result.changed and self.holder.predictor is not None:
            self.on_model(self.holder.predictor)

    def on_model(self, p: Any) -> None:
        """A model is now served: its reference for live drift, its expected UAR."""
        from ser.monitor.reference import load_reference

        try:
            ref = load_reference(p.model_dir)
        except Exception as exc:
            log.warning("model %s/%s: reference not readable (%s)", p.name, p.version, exc)
            ref = None
        self.live.set_model(p.version, ref, p.labels)
        uar = ((getattr(p, "metadata", None) or {}).get("evaluation") or {}).get("uar")
        if isinstance(uar, int | float):
            self.metrics.expected_uar.labels(p.version).set(float(uar))

    # ------------------------------------------------------------------------------------------- answers

    def answered(
        self,
        route: str,
        predictor: Any,
        audio: np.ndarray,
        out: dict[str, Any],
        *,
        logmel: np.ndarray | None = None,
        info: Any = None,
        client_name: str | None = None,
        shadow: bool = False,
    ) -> str:
        """Record one answer (called from a worker thread): its new prediction id, after logging the record,
        feeding the gauges and (``shadow``) handing it to the second model. ``out``: ``label`` (None: no speech),
        ``probabilities`` (label → p, or None), ``duration_s``, ``processing_ms``. Never raises."""
        pid = new_id()
        self.recent.add(pid)
        try:
            self._record(pid, route, predictor, audio, out, logmel, info, client_name, shadow)
        except Exception:
            log.exception("monitoring of an answer failed (the answer is served without its record)")
        return pid

    def _record(
        self,
        pid: str,
        route: str,
        p: Any,
        audio: np.ndarray,
        out: dict[str, Any],
        logmel: np.ndarray | None,
        info: Any,
        client_name: str | None,
        shadow: bool,
    ) -> None:
        sr = int(p.sample_rate)
        stats = input_stats(
            audio,
            sr,
            logmel=logmel,
            native_sr=getattr(info, "sample_rate", None),
            channels=getattr(info, "channels", None),
            container=getattr(info, "format", None),
            codec=getattr(info, "subtype", None),
        )
        label = out.get("label")
        probs = out.get("probabilities")
        if out.get("abstained") and probs:
            # an abstention ("uncertain") is recorded with the model's class: drift and live accuracy describe the
            # model, not the threshold; the record's confidence shows which answers fell under it, and
            # ser_predictions_total{emotion="uncertain"} counts them
            label = max(probs, key=probs.__getitem__)
        version = str(p.version)
        canary = self.canary is not None and self.canary.owns(p)
        self.metrics.observe_input(stats)
        conf = out.get("confidence") if label is not None else None
        values = {name: getattr(stats, name) for name in SCALAR_FIELDS}
        self.live.observe(version, {**values, "confidence": conf, "label": label})
        self.live.predicted(pid, version, label)
        if self.canary is not None and route in CANARY_ROUTES:  # both sides on the same kind of traffic
            self.canary.predicted(pid, CANARY if canary else CHAMPION, label)
        if self.log is not None:
            from ser.audio import pcm_hash

            labels = list(p.labels) if probs else []
            rec = build_record(
                route=route,
                model_name=str(p.name),
                model_version=version,
                probabilities=[float(probs[lab]) for lab in labels] if probs else [],
                labels=labels,
                label=label,
                duration_s=float(out.get("duration_s", audio.size / sr)),
                processing_ms=float(out.get("processing_ms", 0.0)),
                stats=stats,
                pcm_sha256=pcm_hash(audio),
                prediction_id=pid,
                client_name=client_name,
                salt=self.salt,
                role=CANARY if canary else "primary",
            )
            self.log.log(rec)
            self.metrics.log_dropped.sync()  # this process's drops into the counter (several processes: their files)
        if shadow and self.shadow is not None and label is not None:
            self.shadow.submit(pid, route, audio, str(label), stats)

    # ------------------------------------------------------------------------------------------- feedback

    def feedback(
        self, prediction_id: Any, label: Any, classes: list[str], source: str | None, group: str | None
    ) -> tuple[FeedbackRecord, bool]:
        """Validate feedback (the id's form, then whether it was issued: by this process, else in the log on disk,
        404; then the label, :func:`ser.monitor.feedback.validate_feedback`, 422), queue it and
        join it to the live accuracy; returns the record and whether it was queued to the feedback log. Reads
        the log on disk for ids not issued by this process: call from a worker thread."""
        pid = check_id(prediction_id)
        # whether the id was issued first: an id this service never gave is 404 whatever its label
        root = self.root if self.log is not None else None
        if pid not in self.recent and not (root is not None and _issued_on_disk(root, pid)):
            raise UnknownPrediction(f"no prediction {pid} was issued (or it has been purged)")
        rec = validate_feedback(pid, label, classes, source=source, group=group)
        stored = self.feedback_log.log(rec) if self.feedback_log is not None else False
        self.live.feedback(rec.prediction_id, rec.label)
        if self.canary is not None:
            self.canary.feedback(rec.prediction_id, rec.label)
        return rec, stored

    # ------------------------------------------------------------------------------------------- canary

    def canary_pick(self, client_id: str | None) -> Any | None:
        """The canary's predictor when this request goes to it (:meth:`CanaryRunner.pick`), else None."""
        return self.canary.pick(client_id) if self.canary is not None else None

    def served(self, side: str, version: str, ok: bool) -> None:
        """One request answered (``ok``) or failed in the model on ``side`` while a canary runs (else nothing)."""
        if self.canary is not None:
            self.canary.served(side, version, ok)


def _issued_on_disk(root: str, pid: str) -> bool:
    """:func:`ser.monitor.log.issued`, for an id from a request: an id whose time lies in the future (a day of
    clock skew allowed) was never issued, and its time may be beyond what a datetime holds (ts_of would overflow)."""
    if ts_ms_of(pid) > time.time() * 1000 + 86_400_000:
        return False
    return issued(root, pid)


def monitor_of(app: Any) -> ServiceMonitor | None:
    return getattr(app.state, "monitor", None)
