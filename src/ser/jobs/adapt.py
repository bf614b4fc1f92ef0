"""Adapt a model folder to a deployment from unlabelled audio (``ser model adapt``).

Two methods (:func:`choose_method`; ``auto`` picks):

- ``rows`` (:mod:`ser.adaptation`): :class:`AdaptJob` runs every audio file under the target folder through the
  model's own preprocessing (decoded to its rate, mono, the serving silence trim), estimates the per-row statistics
  of its log-mel input rows, reads the training statistics from the folder's ``reference.parquet`` (or, for a
  folder without one, estimates them the same way from ``source_audio``) and records the map in ``adaptation.json``;
  serving applies it before the graph. A model that standardises each clip's rows itself is invariant to it.
- ``batchnorm`` (AdaBN, :mod:`ser.adabn`): the same served model inputs, one clip at a time (its evaluation windows
  for a folder evaluated by windows), re-estimate every BatchNormalization node's mean and variance in topological
  order; the adapted graph replaces ``model.onnx`` and ``adaptation.json`` records the per-layer shifts. Acts on
  utterance-normalised models too; needs a graph exported with its batch norms (:func:`ser.export.export_onnx`).

Either way the copy gets ``adaptation.json``, the ``metadata.json["adaptation"]`` entry and the model card's
adaptation section. The source folder is never modified; the copy is written beside ``out`` and renamed into place.

A file that cannot be used (undecodable, empty, shorter than one analysis window, non-finite) is skipped with its
reason (:attr:`AdaptOutcome.skipped`, also kept in ``adaptation.json``); no usable file at all is an error.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ser.errors import ConfigError, SerError

MAX_SKIPPED_KEPT = 1000
"""Skipped files listed in ``adaptation.json`` (the count is always complete)."""


def list_audio(root: str | Path) -> list[Path]:
    """Audio files (by extension, :data:`ser.data.ingest.AUDIO_EXTENSIONS`) under ``root``, sorted; ``root`` may
    also be one file. :class:`ConfigError` when it does not exist or holds none."""
    from ser.data.ingest import AUDIO_EXTENSIONS

    p = Path(root)
    if not p.exists():
        raise ConfigError(f"audio folder not found: {p}")
    files = (
        [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
    )
    if not files:
        raise ConfigError(f"no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) under {p}")
    return files


def clip_row_stats(path: str | Path, pre: Any, rows: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, float] | str:
    """``(mean, std, seconds)`` of ``rows`` of one file's model input (``pre``: the folder's
    :class:`~ser.model_folder.Preprocessing`, the serving path), or the reason it cannot be used."""
    from ser.adaptation import clip_stats

    got = clip_model_input(path, pre)
    if isinstance(got, str):
        return got
    x, seconds = got
    if x.shape[0] < rows[1]:
        return f"model input has {x.shape[0]} rows, fewer than {rows[1]}"
    mean, std = clip_stats(x[rows[0] : rows[1]])
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        return "no frames after the silence trim"
    return mean, std, seconds


def clip_model_input(path: str | Path, pre: Any) -> tuple[np.ndarray, float] | str:
    """``(model input (F, T), seconds)`` of one file through the folder's serving preprocessing ``pre``, or the
    reason it cannot be used (too short, undecodable: a decoder's own error on a malformed file is a reason too)."""
    from ser.audio import load_audio

    try:
        audio = load_audio(path, pre.sample_rate)
        if audio.size < int(pre.feature_config.get("win_length", 400)):
            return f"too short ({audio.size} samples)"
        return pre.features(audio), audio.size / pre.sample_rate
    except SerError as exc:
        return str(exc) or type(exc).__name__
    except (OSError, ValueError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class DomainEstimate:
    """Per-clip statistics of a folder of audio: what was used and what was skipped."""

    means: np.ndarray
    stds: np.ndarray
    seconds: float
    files: list[str]
    skipped: list[tuple[str, str]]


def estimate_domain(
    files: list[Path], pre: Any, rows: tuple[int, int], *, workers: int | None = 1, what: str = "target"
) -> DomainEstimate:
    """:func:`clip_row_stats` of every file (``workers`` processes for 64 files or more); :class:`SerError` when
    none is usable (naming the first reasons)."""
    paths = [str(f) for f in files]
    if (workers or 1) <= 1 or len(paths) < 64:
        results = [clip_row_stats(p, pre, rows) for p in paths]
    else:
        from joblib import Parallel, delayed

        results = list(
            Parallel(n_jobs=min(int(workers or 1), len(paths)), backend="loky")(
                delayed(clip_row_stats)(p, pre, rows) for p in paths
            )
        )
    ok = [(p, r) for p, r in zip(paths, results, strict=True) if not isinstance(r, str)]
    skipped = [(p, r) for p, r in zip(paths, results, strict=True) if isinstance(r, str)]
    if not ok:
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:3])
        raise SerError(f"{what} audio: none of {len(paths)} file(s) is usable ({reasons})")
    return DomainEstimate(
        means=np.stack([r[0] for _, r in ok]),
        stds=np.stack([r[1] for _, r in ok]),
        seconds=float(sum(r[2] for _, r in ok)),
        files=[p for p, _ in ok],
        skipped=skipped,
    )


METHODS = ("auto", "rows", "batchnorm")


def choose_method(method: str, utterance_norm: bool, has_bn: bool) -> str:
    """The adaptation method (``rows`` or ``batchnorm``) for a requested ``method`` (:data:`METHODS`).

    ``auto``: ``batchnorm`` when the graph holds BatchNormalization nodes (``has_bn``) and every network
    standardises each clip's input rows itself (``utterance_norm``, :func:`ser.adaptation.utterance_normalised`:
    the row map would cancel), else ``rows`` (it acts on the input of a batch- or un-normalised model).
    ``batchnorm`` on a graph without such nodes is a :class:`ConfigError` (they were folded at export)."""
    if method not in METHODS:
        raise ConfigError(f"adaptation method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "batchnorm" and not has_bn:
        raise ConfigError(
            "batchnorm adaptation: the graph has no BatchNormalization node (folded into its convolutions at "
            "export, as in folders exported before ser kept them); re-export the model from its checkpoint, or use "
            "--method rows"
        )
    if method == "auto":
        return "batchnorm" if (has_bn and utterance_norm) else "rows"
    return method


def clip_graph_input(path: str | Path, pre: Any) -> tuple[np.ndarray, float] | str:
    """``(graph input batch, seconds)`` of one file through the serving path (:func:`ser.inference.graph_batch`
    of its model input: ``(1, F, T)`` or its windows), or the reason it cannot be used."""
    from ser.inference import graph_batch

    got = clip_model_input(path, pre)
    if isinstance(got, str):
        return got
    x, seconds = got
    if x.shape[1] == 0:
        return "no frames after the silence trim"
    if not np.all(np.isfinite(x)):
        return "non-finite model input"
    return graph_batch(pre, x), seconds


@dataclass(frozen=True)
class AdaptOutcome:
    path: Path
    target: str
    files: int
    seconds: float
    skipped: list[tuple[str, str]]
    source: str
    rows: tuple[int, int] | None
    shift_db: float
    """Mean absolute difference (dB) between the target and source row means: how far the deployment was off."""
    invariant: bool = False
    """The row map was written for a model that standardises each clip's rows itself
    (:func:`ser.adaptation.utterance_normalised`): the adapted folder answers exactly as the original."""
    method: str = "rows"
    """``rows`` (the input-row map) or ``batchnorm`` (AdaBN: re-estimated batch-norm statistics in the graph)."""
    layers: list[dict[str, Any]] = field(default_factory=list)
    """Per batch-norm layer: node, channels, shift summary (:func:`ser.adabn.adapt_batchnorm`); ``batchnorm`` only."""

    def quarantine(self) -> pd.DataFrame:
        """The skipped files as a quarantine table (:func:`ser.data.schema.quarantine_frame`)."""
        from ser.data.schema import quarantine_frame

        return quarantine_frame([{"path": p, "stage": "adapt", "reason": r} for p, r in self.skipped])

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "target": self.target,
            "files": self.files,
            "seconds": round(self.seconds, 2),
            "skipped": len(self.skipped),
            "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped],
            "source": self.source,
            "method": self.method,
            "rows": list(self.rows) if self.rows else None,
            "mean_row_shift_db": None if not np.isfinite(self.shift_db) else round(self.shift_db, 3),
            "invariant": self.invariant,
            "layers": self.layers,
        }


@dataclass(frozen=True)
class AdaptJob:
    """``model`` (a folder or a registry reference in ``workdir``) adapted to the unlabelled audio under ``audio``
    → a new model folder ``out``.

    ``target``: the deployment's name in the metadata and card (default: the audio folder's name).
    ``source_audio``: training-domain audio for a folder without ``reference.parquet`` (or to override it).
    ``max_files``: a seeded random sample of at most this many target files (None: all). ``overwrite``: replace an
    existing ``out``. ``method``: ``auto`` / ``rows`` / ``batchnorm`` (:func:`choose_method`). ``threads``:
    onnxruntime threads of the batch-norm passes.
    """

    model: str | Path
    audio: Path
    out: Path
    target: str | None = None
    source_audio: Path | None = None
    max_files: int | None = None
    workers: int | None = 1
    seed: int = 0
    overwrite: bool = False
    workdir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    method: str = "auto"
    threads: int = 1

    def run(self) -> AdaptOutcome:
        from ser.adaptation import (
            ADAPTATION_FILE,
            METHOD,
            Adaptation,
            logmel_rows,
            pooled_stats,
            utterance_normalised,
        )
        from ser.jobs.monitor import resolve_model
        from ser.model_folder import CARD_FILE, METADATA_FILE, Preprocessing, check_model_dir, read_metadata

        src = check_model_dir(resolve_model(self.model, self.workdir))
        out = Path(self.out)
        if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
            raise ConfigError(f"--out must be a new folder outside the model folder, got {out}")
        if out.exists() and not self.overwrite:
            raise ConfigError(f"{out} exists (pass overwrite to replace it)")
        meta = read_metadata(src)
        pre = Preprocessing.from_metadata(meta)
        from ser.adabn import has_batchnorm
        from ser.model_folder import MODEL_FILE

        method = choose_method(self.method, utterance_normalised(meta), has_batchnorm(src / MODEL_FILE))
        files = list_audio(self.audio)
        if self.max_files is not None and len(files) > self.max_files:
            pick = np.sort(np.random.default_rng(self.seed).choice(len(files), self.max_files, replace=False))
            files = [files[i] for i in pick]
        if method == "batchnorm":
            return self._run_batchnorm(src, out, meta, pre, files)
        if (meta.get("adaptation") or {}).get("method") == "batchnorm":
            raise ConfigError(f"{src} already has re-estimated batch norms; adapt its base folder instead")
        try:
            rows = logmel_rows(pre.kind, pre.feature_config)
        except SerError as exc:
            raise ConfigError(str(exc)) from None
        tgt = estimate_domain(files, pre, rows, workers=self.workers, what="target")
        target_stats = pooled_stats(tgt.means, tgt.stds)
        source_stats, source_desc = self._source(src, pre, rows)
        adaptation = Adaptation(rows, source_stats, target_stats)

        target = self.target_name
        info = self._info(
            METHOD, src, meta, len(tgt.files), len(tgt.skipped), tgt.seconds, rows=list(rows), source=source_desc
        )
        body = {
            **adaptation.to_dict(),
            "target_audio": str(self.audio),
            "skipped": [{"path": p, "reason": r} for p, r in tgt.skipped[:MAX_SKIPPED_KEPT]],
        }
        self._write(src, out, meta, info, body, CARD_FILE, METADATA_FILE, ADAPTATION_FILE)
        shift = float(np.mean(np.abs(target_stats.mean - source_stats.mean)))
        invariant = utterance_normalised(meta)
        return AdaptOutcome(
            out, target, len(tgt.files), tgt.seconds, tgt.skipped, source_desc, rows, shift, invariant=invariant,
            method="rows",
        )  # fmt: skip

    def _run_batchnorm(self, src: Path, out: Path, meta: dict[str, Any], pre: Any, files: list[Path]) -> AdaptOutcome:
        """AdaBN (:mod:`ser.adabn`) on the target files' served graph inputs, one clip at a time."""
        import onnx

        from ser.adabn import METHOD, adapt_batchnorm
        from ser.adaptation import ADAPTATION_FILE, ADAPTATION_FORMAT
        from ser.model_folder import CARD_FILE, INPUT_NAME, METADATA_FILE, MODEL_FILE

        if meta.get("adaptation") and (meta["adaptation"] or {}).get("method") != METHOD:
            raise ConfigError(
                f"{src} is already adapted by its input rows ({meta['adaptation'].get('method')}); "
                "adapt its base folder instead"
            )
        paths = [str(f) for f in files]
        results = [clip_graph_input(p, pre) for p in paths]
        ok = [(p, r) for p, r in zip(paths, results, strict=True) if not isinstance(r, str)]
        skipped = [(p, r) for p, r in zip(paths, results, strict=True) if isinstance(r, str)]
        if not ok:
            reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:3])
            raise SerError(f"target audio: none of {len(paths)} file(s) is usable ({reasons})")
        seconds = float(sum(r[1] for _, r in ok))
        adapted, layers = adapt_batchnorm(
            onnx.load(str(src / MODEL_FILE)), [r[0] for _, r in ok], input_name=INPUT_NAME, threads=self.threads
        )
        target = self.target_name
        shift_sd = round(float(np.mean([la["mean_shift_sd"] for la in layers])), 4)
        info = self._info(METHOD, src, meta, len(ok), len(skipped), seconds, layers=len(layers), mean_shift_sd=shift_sd)
        body = {
            "format": ADAPTATION_FORMAT,
            "method": METHOD,
            "target_audio": str(self.audio),
            "clips": len(ok),
            "seconds": round(seconds, 2),
            "layers": layers,
            "skipped": [{"path": p, "reason": r} for p, r in skipped[:MAX_SKIPPED_KEPT]],
        }
        self._write(src, out, meta, info, body, CARD_FILE, METADATA_FILE, ADAPTATION_FILE, graph=(MODEL_FILE, adapted))
        return AdaptOutcome(
            out, target, len(ok), seconds, skipped, "the graph's batch-norm statistics", None, float("nan"),
            method=METHOD, layers=layers,
        )  # fmt: skip

    @property
    def target_name(self) -> str:
        """The deployment's name in the metadata and card: ``target``, else the audio folder's name."""
        return self.target or Path(self.audio).resolve().name

    def _info(
        self, method: str, src: Path, meta: dict[str, Any], files: int, skipped: int, seconds: float, **fields: Any
    ) -> dict[str, Any]:
        """``metadata.json["adaptation"]`` of either method: what was adapted to, from which base, and the method's
        own ``fields``."""
        from ser.adaptation import ADAPTATION_FILE

        return {
            "file": ADAPTATION_FILE,
            "method": method,
            "target": self.target_name,
            "target_audio": str(self.audio),
            "files": files,
            "skipped": skipped,
            "seconds": round(seconds, 2),
            **fields,
            "base": {"name": meta.get("name"), "version": meta.get("version"), "path": str(src)},
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **self.extra,
        }

    def _source(self, src: Path, pre: Any, rows: tuple[int, int]) -> tuple[Any, str]:
        """The training statistics: from ``source_audio`` when given, else from the folder's reference profile."""
        from ser.adaptation import pooled_stats
        from ser.monitor.reference import load_reference

        if self.source_audio is not None:
            est = estimate_domain(list_audio(self.source_audio), pre, rows, workers=self.workers, what="source")
            return pooled_stats(est.means, est.stds), f"{len(est.files)} clips under {self.source_audio}"
        ref = load_reference(src)
        if ref is None:
            raise SerError(
                f"{src} has no reference.parquet, so the training statistics are unknown: pass the training "
                "audio as source_audio (--source-audio), or export the model through the pipeline, which writes it"
            )
        means, stds = ref.bands("mel_mean"), ref.bands("mel_std")
        if means.shape[1] != rows[1] - rows[0]:
            raise SerError(
                f"{src}/reference.parquet holds {means.shape[1]} mel bands, the model input {rows[1] - rows[0]}"
            )
        stats = pooled_stats(means, stds)
        return stats, f"reference.parquet, {stats.clips} training clips"

    def _write(self, src, out, meta, info, body, card_file, metadata_file, adaptation_file, graph=None) -> None:
        from ser.card import with_adaptation
        from ser.io import write_json, write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_root = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            tmp = tmp_root / "model"
            shutil.copytree(src, tmp)
            write_json(tmp / adaptation_file, body)
            if graph is not None:  # (file name, onnx.ModelProto): the adapted graph replaces the copied one
                import onnx

                onnx.save(graph[1], str(tmp / graph[0]))
            new_meta = {**meta, "version": "unregistered", "adaptation": info}
            write_json(tmp / metadata_file, new_meta)
            card = (tmp / card_file).read_text() if (tmp / card_file).is_file() else f"# {meta.get('name', 'model')}\n"
            write_text(tmp / card_file, with_adaptation(card, info))
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp_root, ignore_errors=True)
