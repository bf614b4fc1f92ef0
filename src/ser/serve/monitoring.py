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
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ser.inference import Predictor
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
            self.shadow = ShadowRunner(block, self.second_holder(block), self)
            threading.Thread(target=self.shadow.holder.reload, name="ser-shadow-load", daemon=True).start()
            if self.settings.reload_poll_s > 0:
                self.shadow.holder.start_polling(self.settings.reload_poll_s)

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
        self.metrics.observe_input(stats)
        conf = out.get("confidence") if label is not None else None
        values = {name: getattr(stats, name) for name in SCALAR_FIELDS}
        self.live.observe(version, {**values, "confidence": conf, "label": label})
        self.live.predicted(pid, version, label)
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
            )
            self.log.log(rec)
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
        return rec, stored


def _issued_on_disk(root: str, pid: str) -> bool:
    """:func:`ser.monitor.log.issued`, for an id from a request: an id whose time lies in the future (a day of
    clock skew allowed) was never issued, and its time may be beyond what a datetime holds (ts_of would overflow)."""
    if ts_ms_of(pid) > time.time() * 1000 + 86_400_000:
        return False
    return issued(root, pid)


def monitor_of(app: Any) -> ServiceMonitor | None:
    return getattr(app.state, "monitor", None)
