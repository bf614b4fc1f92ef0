"""The model a server answers with, and its hot reload.

:class:`ModelHolder` owns one :class:`~ser.inference.Predictor`, loaded from a model folder or from a workdir's
registry (default: the ``champion`` of ``ser-emotion``). :meth:`ModelHolder.reload` loads the new model *beside*
the old one and then swaps a single reference, so a request that already took the old predictor (with
:meth:`ModelHolder.get`) finishes on it; a failed load keeps the old model and reports why. An optional
background thread polls the source (the registry's ``aliases.json``, or the model folder's files) every
``interval`` seconds and reloads when it points somewhere new.

No PyTorch here: only onnxruntime, numpy and the registry's files.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ser.errors import ConfigError, SerError
from ser.inference import Predictor
from ser.model_folder import METADATA_FILE, MODEL_FILE
from ser.serve.security import redact_paths

log = logging.getLogger("ser.serve")


class ModelNotReady(SerError):
    """No model is loaded yet (or every load so far has failed)."""


@dataclass(frozen=True)
class ReloadResult:
    """Outcome of one (re)load: ``ok``, the version now served, the one before, whether it changed, the error."""

    ok: bool
    version: str | None
    previous_version: str | None
    changed: bool
    error: str | None
    source: str | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Loader = Callable[[Path, int | None], Predictor]


def _default_loader(path: Path, threads: int | None) -> Predictor:
    return Predictor(path, threads=threads)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class ModelHolder:
    """Holds the served :class:`~ser.inference.Predictor` and swaps it on reload.

    Exactly one source: ``model_dir`` (a model folder), or ``workdir`` with an optional registry ``ref``
    (``NAME[@ALIAS|/VERSION]``, default the champion); neither: the default workdir, or when nothing names a model
    and it has no champion, the bundled pretrained model (:mod:`ser.pretrained`, logged in one line). Nothing is
    loaded until :meth:`reload`.
    ``loader(path, threads)`` builds a predictor (tests inject a slow or failing one).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        workdir: str | Path | None = None,
        ref: str | None = None,
        threads: int | None = 1,
        loader: Loader | None = None,
    ):
        if model_dir is not None and workdir is not None:
            raise ConfigError("give a model folder or a workdir, not both")
        if model_dir is None and workdir is None:
            from ser.pretrained import fallback_dir, notice
            from ser.registry import default_workdir

            model_dir = fallback_dir(ref)  # nothing named and no champion: the bundled pretrained model
            if model_dir is not None:
                log.warning("%s", notice(model_dir))
            else:
                workdir = default_workdir()
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.workdir = Path(workdir) if workdir is not None else None
        self.ref = ref
        self.threads = threads
        self._loader = loader or _default_loader
        self._predictor: Predictor | None = None
        self._lock = threading.Lock()  # one load at a time; reads never take it
        self._loaded_fp: str | None = None
        self._failed_fp: str | None = None
        self.loaded_at: str | None = None
        self.last_error: str | None = None
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.listeners: list[Callable[[ReloadResult], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------------------------------------------- reading

    @property
    def predictor(self) -> Predictor | None:
        """The predictor now served (None before the first successful load)."""
        return self._predictor

    @property
    def ready(self) -> bool:
        return self._predictor is not None

    def get(self) -> Predictor:
        """The predictor to use for one whole request; raises :class:`ModelNotReady` when none is loaded."""
        p = self._predictor
        if p is None:
            raise ModelNotReady(f"no model loaded ({self.redact(self.last_error) if self.last_error else 'loading'})")
        return p

    def redact(self, text: str) -> str:
        """``text`` (an error) fit for an answer: the source folder as ``<model>`` / ``<workdir>``, no absolute path
        (the full text goes to the log)."""
        return redact_paths(text, {"<model>": self.model_dir, "<workdir>": self.workdir})

    def describe_source(self) -> str:
        if self.model_dir is not None:
            return str(self.model_dir)
        return f"{self.workdir} ({self.ref or 'champion'})"

    def source_dir(self) -> Path:
        """The model folder the source points to now (the registry is read every call)."""
        if self.model_dir is not None:
            return self.model_dir
        from ser.registry import resolve

        assert self.workdir is not None  # a holder has a model folder or a workdir (checked at construction)
        return resolve(self.workdir, self.ref)

    def fingerprint(self) -> str | None:
        """What identifies the model the source points to now: the resolved registry folder, or for a plain model
        folder the size and modification time of its files. None when it cannot be read (nothing to load)."""
        try:
            path = self.source_dir()
            stats = [(path / f).stat() for f in (METADATA_FILE, MODEL_FILE)]
        except (SerError, OSError):
            return None
        return f"{path.resolve()}|" + "|".join(f"{s.st_ino}:{s.st_size}:{s.st_mtime_ns}" for s in stats)

    def status(self) -> dict[str, Any]:
        p = self._predictor
        return {
            "ready": p is not None,
            "name": p.name if p else None,
            "version": p.version if p else None,
            "source": self.describe_source(),
            "model_dir": str(p.model_dir) if p else None,
            "loaded_at": self.loaded_at,
            "last_error": self.last_error,
            "reloads_ok": self.reloads_ok,
            "reloads_failed": self.reloads_failed,
            "polling": self._thread is not None and self._thread.is_alive(),
        }

    # -------------------------------------------------------------------------------------------------- loading

    def reload(self) -> ReloadResult:
        """Load the model the source points to now and swap it in; on failure keep the old one.

        Thread-safe: concurrent calls load one after the other. Never raises for a bad model: the result (and
        :attr:`last_error`) says what went wrong."""
        with self._lock:
            t0 = time.perf_counter()
            old = self._predictor
            old_version = old.version if old else None
            fp = self.fingerprint()
            try:
                path = self.source_dir()
                new = self._loader(path, self.threads)
            except Exception as exc:  # any failure to load must leave the served model in place
                self.last_error = str(exc) or type(exc).__name__
                log.warning("model load failed (%s): %s", self.describe_source(), self.last_error)
                self.reloads_failed += 1
                self._failed_fp = fp
                result = ReloadResult(
                    False, old_version, old_version, False, self.last_error, None, time.perf_counter() - t0
                )
            else:
                self._predictor = new  # the swap: one reference assignment
                self._loaded_fp, self._failed_fp = fp, None
                self.loaded_at = _now()
                self.last_error = None
                self.reloads_ok += 1
                changed = old is None or str(old.model_dir) != str(new.model_dir) or old_version != new.version
                result = ReloadResult(
                    True, new.version, old_version, changed, None, str(path), time.perf_counter() - t0
                )
        for listener in list(self.listeners):
            listener(result)
        return result

    def poll_once(self) -> ReloadResult | None:
        """Reload when the source points to a model other than the one loaded (and other than the last one that
        failed); None when there is nothing new, or while a load is running (the first one at start-up: it would
        be loaded twice)."""
        if self._lock.locked():
            return None
        fp = self.fingerprint()
        if fp is None or fp == self._loaded_fp or fp == self._failed_fp:
            return None
        return self.reload()

    def start_polling(self, interval_s: float) -> None:
        """Poll the source every ``interval_s`` seconds in a daemon thread (see :meth:`poll_once`)."""
        if interval_s <= 0:
            raise ConfigError(f"poll interval must be > 0 s, got {interval_s}")
        self.stop_polling()
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.poll_once()

        self._thread = threading.Thread(target=loop, name="ser-model-poll", daemon=True)
        self._thread.start()

    def stop_polling(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
