"""One recording → its rows, in a worker: open by URI (fsspec), decode (downmixed, or per channel), the timeline of
each channel with an onnxruntime :class:`ser.inference.Predictor`, rows by :mod:`ser.batch.core`.

A worker loads its model once (:class:`FileProcessor`) and then takes files one by one. Nothing a file does stops
the run: an unreadable, corrupt or unsuitable file (mono with ``split``) becomes a ``failed`` row with the reason.
The class is named by an import path (:attr:`WorkerSettings.processor`, :func:`make_processor`), so a deployment
can hand the workers a subclass, e.g. one whose :meth:`FileProcessor.decode` reads a proprietary container.
Threads are pinned per worker (:func:`pin_threads`): ``threads`` onnxruntime threads and as many BLAS / OpenMP
threads, so N workers on N cores do not oversubscribe them.
"""

from __future__ import annotations

import hashlib
import os
import pkgutil
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ser.audio import AudioInfo, Decoded, DecodeLimits
from ser.batch.core import FileInfo, FileResult, failed_row, file_result
from ser.errors import ConfigError, SerError
from ser.timeline import MIX, Channels, TimelineConfig, analyze, channel_names

DEFAULT_PROCESSOR = "ser.batch.worker:FileProcessor"
"""The per-file processor workers use unless :attr:`WorkerSettings.processor` names another."""
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that cap the BLAS / OpenMP pools of a worker process at ``threads``."""
    return dict.fromkeys(THREAD_VARIABLES, str(threads))


def pin_threads(threads: int) -> None:
    """Cap this process' BLAS / OpenMP threads at ``threads`` (the variables for pools not yet started, and
    threadpoolctl for those numpy already started). onnxruntime's own pool is set on its session."""
    os.environ.update(thread_env(threads))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return
    threadpool_limits(threads)


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker needs besides the model: the timeline parameters, the channel handling, the decoding
    bounds, the threads per worker and the ``processor`` class (``module:Class``, a :class:`FileProcessor` or a
    subclass; every worker process must be able to import it)."""

    timeline: TimelineConfig = field(default_factory=TimelineConfig)
    channels: Channels = "mix"
    channel_names: tuple[str, ...] = ()
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    threads: int = 1
    processor: str = DEFAULT_PROCESSOR


@dataclass(frozen=True)
class ModelFiles:
    """A model folder's files as bytes (``model.onnx``, ``metadata.json``): what a Ray driver ships to workers that
    do not see its disk."""

    files: dict[str, bytes]

    @classmethod
    def read(cls, model_dir: str | Path) -> ModelFiles:
        from ser.model_folder import METADATA_FILE, MODEL_FILE

        return cls({name: (Path(model_dir) / name).read_bytes() for name in (MODEL_FILE, METADATA_FILE)})

    @property
    def key(self) -> str:
        """SHA-256 of the files (names and bytes)."""
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return h.hexdigest()

    def materialise(self) -> Path:
        """The files in a folder of this machine's temporary directory named by their hash: written once (to a
        temporary folder renamed into place, so workers racing for it never see a half-written model) and reused by
        every worker process on the machine."""
        folder = Path(tempfile.gettempdir()) / f"ser-batch-model-{self.key[:16]}"
        if all((folder / name).is_file() for name in self.files):
            return folder
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        for name, data in self.files.items():
            (tmp / name).write_bytes(data)
        try:
            os.rename(tmp, folder)
        except OSError:  # another worker got there first
            shutil.rmtree(tmp, ignore_errors=True)
        return folder


class FileProcessor:
    """A worker's state: the model loaded once, then :meth:`__call__` per file."""

    def __init__(self, model: str | Path | ModelFiles, settings: WorkerSettings):
        from ser.inference import Predictor

        pin_threads(settings.threads)
        model_dir = model.materialise() if isinstance(model, ModelFiles) else Path(model)
        self.predictor = Predictor(model_dir, threads=settings.threads)
        self.settings = settings

    def __call__(self, uri: str, file: str, size: int | None = None) -> FileResult:
        """The rows of one recording; never raises for anything the file does (a ``failed`` row instead)."""
        t0 = time.perf_counter()
        s, p = self.settings, self.predictor
        header: list[AudioInfo] = []
        names: list[str] = []

        def check(h: AudioInfo) -> None:  # on the header, before a sample is decoded
            header.append(h)
            names.extend(channel_names(h.channels, s.channel_names) if s.channels == "split" else [MIX])

        try:
            decoded = self.decode(uri, check)
            lanes = decoded.audio if s.channels == "split" else decoded.audio[None]
            timelines = [
                (name, analyze(lane, p.sample_rate, p.predict_proba, p.labels, s.timeline))
                for name, lane in zip(names, lanes, strict=True)
            ]
        except SerError as exc:
            reason = str(exc)
        except Exception as exc:  # storage, fsspec, libsndfile, soxr, onnxruntime: one file never stops the run
            reason = (f"{type(exc).__name__}: {exc}".splitlines() or ["error"])[0]
        else:
            return file_result(_info(file, size, header), timelines, time.perf_counter() - t0)
        return FileResult(file, summaries=[failed_row(_info(file, size, header), reason, time.perf_counter() - t0)])

    def decode(self, uri: str, check: Callable[[AudioInfo], None]) -> Decoded:
        """The recording at ``uri`` decoded at the model's sample rate (downmixed, or ``(channels, samples)`` with
        ``split``); ``check`` is called on its header before a sample is decoded. Raises on anything wrong with the
        file (the caller records it as failed)."""
        from ser.audio import decode
        from ser.batch.archive import filesystem

        s = self.settings
        fs, path = filesystem(uri)
        with fs.open(path, "rb") as fh:
            return decode(fh, self.predictor.sample_rate, s.limits, split_channels=s.channels == "split", check=check)


def processor_class(name: str) -> type[FileProcessor]:
    """The :class:`FileProcessor` (sub)class an import path ``module:Class`` names; :class:`ConfigError` when it
    cannot be imported or is not one."""
    try:
        cls = pkgutil.resolve_name(name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"batch processor {name!r} cannot be imported: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, FileProcessor)):
        raise ConfigError(f"batch processor {name!r} is not a ser.batch.worker.FileProcessor (sub)class")
    return cls


def make_processor(model: str | Path | ModelFiles, settings: WorkerSettings) -> FileProcessor:
    """The worker's processor: the class ``settings.processor`` names, with the model loaded."""
    return processor_class(settings.processor)(model, settings)


def _info(file: str, size: int | None, header: list[Any]) -> FileInfo:
    h = header[0] if header else None
    return FileInfo(file, size, h.channels if h else None, h.sample_rate if h else None)


def model_identity(model_dir: str | Path) -> dict[str, Any]:
    """Name, version, labels and the SHA-256 of ``model.onnx`` of a model folder, read without loading it."""
    from ser.audio import sha256_file
    from ser.model_folder import MODEL_FILE, read_metadata

    meta = read_metadata(model_dir)
    return {
        "name": str(meta.get("name", Path(model_dir).name)),
        "version": str(meta.get("version", "unregistered")),
        "labels": list(meta["labels"]),
        "sha256": sha256_file(Path(model_dir) / MODEL_FILE),
    }
