"""Feature extraction over a manifest: parallel, cached, and tolerant of bad files.

:func:`extract_manifest` runs :func:`extract_one` for every row (``utt_id``, ``path``, ``sha256``) in worker
processes. Per utterance and per kind it first reads the cache (:mod:`ser.features.cache`); only what misses is
computed, and the audio is decoded only if something misses. Requesting ``functionals`` also caches the frame
kinds they are made from (unless ``cache_frames=False``), so a later change of one parameter recomputes only the
kinds that depend on it. A file that cannot be decoded becomes a row of :attr:`ExtractResult.failures`; the other
files still extract.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ser.audio import load_audio, sha256_file
from ser.data.schema import quarantine_frame
from ser.errors import AudioError, ConfigError, ManifestError, SerError
from ser.executor import Executor
from ser.features import ALIGNED_KINDS, KINDS, OPENSMILE_KINDS, TABLE_KINDS, FeatureConfig
from ser.features import frames as frames_mod
from ser.features.cache import FeatureCache
from ser.features.functionals import feature_names, functionals

OPENSMILE_HINT = (
    "install the optional openSMILE package with `pip install opensmile` "
    "(audEERING's licence: free for research, private and educational use only, no commercial use)"
)


@dataclass
class OneResult:
    """Features of one file: ``data`` ``{kind: array}``, ``names`` for table kinds, and cache accounting."""

    data: dict[str, np.ndarray] = field(default_factory=dict)
    names: dict[str, list[str]] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)
    misses: Counter = field(default_factory=Counter)
    corrupt: Counter = field(default_factory=Counter)


@dataclass
class ExtractResult:
    """What :func:`extract_manifest` produced.

    - ``features``: ``{utt_id: {kind: array}}`` for the utterances that extracted (frame kinds ``(rows, T)``,
      table kinds ``(D,)``).
    - ``tables``: ``{table kind: DataFrame}`` indexed by ``utt_id`` (manifest order), one float32 column per
      feature name; :attr:`functionals` is ``tables["functionals"]``.
    - ``failures``: ``[{"utt_id", "path", "reason"}]`` for the utterances that did not.
    - ``hits`` / ``misses`` / ``corrupt``: per kind, entries read from the cache / computed / found unreadable
      (and recomputed). A kind served from the cache is never counted as a miss.
    """

    config: FeatureConfig
    kinds: tuple[str, ...]
    features: dict[str, dict[str, np.ndarray]]
    tables: dict[str, pd.DataFrame]
    failures: list[dict[str, str]]
    hits: dict[str, int]
    misses: dict[str, int]
    corrupt: dict[str, int]
    seconds: float
    n_utterances: int
    kind_hashes: dict[str, str]

    @property
    def functionals(self) -> pd.DataFrame | None:
        return self.tables.get("functionals")

    def quarantine(self) -> pd.DataFrame:
        """Failures as a quarantine table (``path``, ``stage="features"``, ``reason``)."""
        return quarantine_frame(
            [{"path": f["path"], "stage": "features", "reason": f["reason"]} for f in self.failures]
        )

    def summary(self) -> dict:
        """JSON-ready summary (configuration, hashes, counts, cache hits/misses, seconds)."""
        return {
            "config": self.config.to_dict(),
            "config_hash": self.config.hash(),
            "kinds": list(self.kinds),
            "kind_hashes": dict(self.kind_hashes),
            "counts": {
                "utterances": self.n_utterances,
                "extracted": len(self.features),
                "failed": len(self.failures),
            },
            "n_features": {k: int(t.shape[1]) for k, t in self.tables.items()},
            "hits": dict(self.hits),
            "misses": dict(self.misses),
            "corrupt": dict(self.corrupt),
            "seconds": round(self.seconds, 3),
            "failures": list(self.failures),
        }


def default_workers() -> int:
    """``min(cpu count, 2)``: feature extraction is CPU-bound and the machine is usually shared."""
    return max(1, min(os.cpu_count() or 1, 2))


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """Validate requested kinds (unique, known; openSMILE ones need the package) and return them as a tuple."""
    kinds = tuple(dict.fromkeys(kinds))
    if not kinds:
        raise ConfigError("no feature kind requested")
    for k in kinds:
        if k not in KINDS:
            raise ConfigError(f"unknown feature kind {k!r}; choose from {', '.join(KINDS)}")
        if k in OPENSMILE_KINDS:
            require_opensmile(k)
    return kinds


def require_opensmile(kind: str = "egemaps") -> None:
    """Raise :class:`SerError` with install and licence instructions if ``opensmile`` is not importable."""
    if importlib.util.find_spec("opensmile") is None:
        raise SerError(f"feature kind {kind!r} needs openSMILE, which is not installed: {OPENSMILE_HINT}")


@lru_cache(maxsize=2)
def _smile(kind: str):
    import opensmile

    feature_set = {"egemaps": opensmile.FeatureSet.eGeMAPSv02, "compare": opensmile.FeatureSet.ComParE_2016}[kind]
    return opensmile.Smile(feature_set=feature_set, feature_level=opensmile.FeatureLevel.Functionals)


def opensmile_functionals(y: np.ndarray, sr: int, kind: str) -> tuple[np.ndarray, list[str]]:
    """openSMILE eGeMAPSv02 (``kind="egemaps"``, 88 values) or ComParE_2016 (``"compare"``, 6373) functionals."""
    require_opensmile(kind)
    table = _smile(kind).process_signal(np.asarray(y, dtype=np.float32), sr)
    return table.to_numpy(dtype=np.float32).ravel(), [str(c) for c in table.columns]


def kind_hashes(cfg: FeatureConfig, kinds: Iterable[str]) -> dict[str, str]:
    """Hashes of the requested kinds and of the frame kinds ``functionals`` is made from."""
    needed = set(kinds)
    if "functionals" in needed:
        needed.update(cfg.frame_kinds)
    return {k: cfg.kind_hash(k) for k in KINDS if k in needed}


def extract_one(
    path: str | Path,
    cfg: FeatureConfig,
    kinds: Iterable[str] = ("functionals",),
    *,
    cache: FeatureCache | None = None,
    sha: str | None = None,
    hashes: dict[str, str] | None = None,
    cache_frames: bool = True,
) -> OneResult:
    """Features of one audio file, through ``cache``.

    ``sha`` is the SHA-256 of the file bytes (computed when not given). The file must exist, but is read only if
    something misses the cache; then it is decoded and its hash checked against ``sha``, so a file edited since
    the manifest was made raises :class:`AudioError` instead of caching features under a stale key. Raises
    :class:`AudioError` for missing, undecodable or too-short audio.
    """
    cache = cache or FeatureCache(None)
    kinds = tuple(kinds)
    hashes = hashes or kind_hashes(cfg, kinds)
    path = Path(path)
    if not path.is_file():  # cheap, and a vanished file should not pass silently even if its features are cached
        raise AudioError("file not found")
    verify = bool(sha)
    sha = (sha or _hash_file(path)).lower()
    res = OneResult()
    audio: list[np.ndarray] = []

    def signal() -> np.ndarray:
        if not audio:
            if verify and _hash_file(path) != sha:
                raise AudioError("file changed since the manifest was made (sha256 differs); re-run ingest")
            audio.append(load_audio(path, cfg.sr))
        return audio[0]

    def look(kind: str) -> dict[str, np.ndarray] | None:
        arrays, status = cache.lookup(kind, hashes[kind], sha)
        if status == "hit":
            res.hits[kind] += 1
        elif status == "corrupt":
            res.corrupt[kind] += 1
        return arrays

    # 1. utterance-level kinds straight from the cache
    pending: list[str] = []
    frame_needed = [k for k in ALIGNED_KINDS if k in kinds]
    for kind in (k for k in kinds if k in TABLE_KINDS):
        arrays = look(kind)
        if arrays is not None:
            res.data[kind] = arrays["data"]
            res.names[kind] = [str(n) for n in arrays["names"]]
        else:
            pending.append(kind)
    if "functionals" in pending:
        frame_needed = [k for k in ALIGNED_KINDS if k in kinds or k in cfg.frame_kinds]

    # 2. frame kinds: cached ones, then one shared computation for the rest
    frame_data: dict[str, np.ndarray] = {}
    missing = []
    for kind in frame_needed:
        arrays = look(kind)
        if arrays is not None:
            frame_data[kind] = arrays["data"]
        else:
            missing.append(kind)
    if missing:
        computed = frames_mod.compute(signal(), cfg, tuple(missing))
        for kind in missing:
            res.misses[kind] += 1
            frame_data[kind] = computed[kind]
            if cache_frames or kind in kinds:
                cache.put(kind, hashes[kind], sha, {"data": computed[kind]})
    for kind in frame_needed:
        if kind in kinds:
            res.data[kind] = frame_data[kind]

    # 3. utterance-level kinds that missed
    for kind in pending:
        if kind == "functionals":
            vec, names = functionals(frame_data, cfg)
        else:
            vec, names = opensmile_functionals(signal(), cfg.sr, kind)
        res.misses[kind] += 1
        res.data[kind], res.names[kind] = vec, names
        cache.put(kind, hashes[kind], sha, {"data": vec, "names": np.asarray(names, dtype=str)})
    return res


def _hash_file(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as exc:
        raise AudioError(f"cannot read file: {exc.strerror or exc}") from exc


def _job(
    utt_id: str,
    path: str,
    sha: str,
    cfg: FeatureConfig,
    kinds: tuple[str, ...],
    hashes: dict[str, str],
    cache_root: str | None,
    cache_frames: bool,
) -> tuple[str, OneResult | None, str | None]:
    """Worker entry point: never raises, returns ``(utt_id, result, failure reason)``."""
    try:
        with frames_mod.one_blas_thread():
            res = extract_one(
                path, cfg, kinds, cache=FeatureCache(cache_root), sha=sha or None, hashes=hashes,
                cache_frames=cache_frames,
            )  # fmt: skip
        return utt_id, res, None
    except SerError as exc:
        return utt_id, None, str(exc)
    except Exception as exc:  # one bad file must not stop the run; its reason is reported
        return utt_id, None, f"{type(exc).__name__}: {exc}"


def extract_manifest(
    manifest: pd.DataFrame,
    cfg: FeatureConfig | None = None,
    cache_dir: str | Path | None = None,
    *,
    kinds: Iterable[str] = ("functionals",),
    workers: int | None = None,
    progress: bool = False,
    cache_frames: bool = True,
    executor: Executor | None = None,
) -> ExtractResult:
    """Extract ``kinds`` for every row of ``manifest`` (columns ``utt_id``, ``path``, optional ``sha256``).

    ``cache_dir=None`` disables caching. ``workers`` processes (default :func:`default_workers`; 1 runs in this
    process). A ``ray`` ``executor`` (:mod:`ser.executor`) extracts batches of :data:`RAY_BATCH` files as Ray
    tasks of one CPU each instead, over as many machines as the cluster has (the files and ``cache_dir`` must be
    at the same path on every node). Undecodable files are listed in ``failures``; the run raises only for a bad
    manifest or bad arguments.
    """
    cfg = cfg or FeatureConfig()
    kinds = check_kinds(kinds)
    for col in ("utt_id", "path"):
        if col not in manifest.columns:
            raise ManifestError(f"manifest lacks column {col!r}")
    dup = manifest["utt_id"].duplicated()
    if dup.any():
        raise ManifestError(f"utt_id is not unique: {manifest.loc[dup, 'utt_id'].iloc[0]!r} repeats")
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")

    start = time.perf_counter()
    hashes = kind_hashes(cfg, kinds)
    cache = FeatureCache(cache_dir)
    for kind in hashes:
        cache.describe(kind, cfg)
    shas = manifest["sha256"] if "sha256" in manifest.columns else pd.Series([""] * len(manifest))
    rows = [
        (str(u), str(p), "" if pd.isna(s) else str(s).lower())
        for u, p, s in zip(manifest["utt_id"], manifest["path"], shas, strict=True)
    ]
    cache_root = str(cache.root) if cache.root is not None else None
    args = (cfg, kinds, hashes, cache_root, cache_frames)

    if executor is not None and executor.is_ray:
        outcomes = _run_on_ray(rows, args, executor, progress)
    else:
        outcomes = _run_jobs(rows, args, workers, progress)
    features, failures, counts, names = _collect(rows, outcomes)
    tables = {}
    for kind in (k for k in kinds if k in TABLE_KINDS):
        cols = names.get(kind) or (feature_names(cfg) if kind == "functionals" else [])
        ids = list(features)
        data = np.stack([features[u][kind] for u in ids]) if ids else np.zeros((0, len(cols)), dtype=np.float32)
        tables[kind] = pd.DataFrame(data, index=pd.Index(ids, name="utt_id"), columns=cols)
    return ExtractResult(
        config=cfg,
        kinds=kinds,
        features=features,
        tables=tables,
        failures=failures,
        hits=dict(counts["hits"]),
        misses=dict(counts["misses"]),
        corrupt=dict(counts["corrupt"]),
        seconds=time.perf_counter() - start,
        n_utterances=len(rows),
        kind_hashes=hashes,
    )


Rows = list[tuple[str, str, str]]
"""``(utt_id, path, sha256)`` per utterance."""
Outcomes = dict[str, tuple["OneResult | None", "str | None"]]


def _run_jobs(rows: Rows, args: tuple, workers: int, progress: bool) -> Outcomes:
    """Extract every row, in this process or a loky pool; a dead worker fails the rows it left undone."""
    outcomes: Outcomes = {}
    if workers == 1 or len(rows) <= 1:
        for u, p, s in _progress(rows, progress):
            _, res, err = _job(u, p, s, *args)
            outcomes[u] = (res, err)
        return outcomes
    # joblib's loky workers are started once and reused across calls, and (unlike multiprocessing's spawn and
    # forkserver) do not re-run the caller's __main__, so scripts without a main guard work too.
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=min(workers, len(rows)), backend="loky", return_as="generator_unordered")
    try:
        results = parallel(delayed(_job)(u, p, s, *args) for u, p, s in rows)
        for u, res, err in _progress(results, progress, total=len(rows)):
            outcomes[u] = (res, err)
    except Exception as exc:  # a worker process died (killed for memory, crashed in native code)
        detail = (str(exc).strip().splitlines() or [""])[0]
        reason = f"worker process failed: {type(exc).__name__}: {detail}"
        for u, _, _ in rows:
            outcomes.setdefault(u, (None, reason))
    return outcomes


RAY_BATCH = 32
"""Files per Ray task: enough to amortise a task's start, few enough to spread a corpus over a cluster."""


def _job_batch(batch: Rows, *, args: tuple) -> list[tuple[str, OneResult | None, str | None]]:
    """Ray task: :func:`_job` of each ``(utt_id, path, sha256)`` row (never raises for a bad file)."""
    return [_job(u, p, s, *args) for u, p, s in batch]


def _run_on_ray(rows: Rows, args: tuple, executor: Executor, progress: bool) -> Outcomes:
    """Extract every row as Ray tasks of :data:`RAY_BATCH` rows; the results come back through Ray's object store."""
    batches = [rows[i : i + RAY_BATCH] for i in range(0, len(rows), RAY_BATCH)]
    outcomes: Outcomes = {}
    one_cpu = replace(executor, cpus_per_task=1)  # extraction is single-threaded numpy
    done = one_cpu.iter_tasks(_job_batch, batches, shared={"args": args})
    for _, results in _progress(done, progress, total=len(batches)):
        for u, res, err in results:
            outcomes[u] = (res, err)
    return outcomes


def _collect(
    rows: Rows, outcomes: Outcomes
) -> tuple[dict[str, dict[str, np.ndarray]], list[dict[str, str]], dict[str, Counter], dict[str, list[str]]]:
    """Features by utterance, failures, cache counters (hits, misses, corrupt) and feature names, in row order."""
    features: dict[str, dict[str, np.ndarray]] = {}
    failures: list[dict[str, str]] = []
    counts: dict[str, Counter] = {"hits": Counter(), "misses": Counter(), "corrupt": Counter()}
    names: dict[str, list[str]] = {}
    for u, p, _ in rows:
        res, err = outcomes[u]
        if res is None:
            failures.append({"utt_id": u, "path": p, "reason": err or "unknown error"})
            continue
        features[u] = res.data
        counts["hits"].update(res.hits)
        counts["misses"].update(res.misses)
        counts["corrupt"].update(res.corrupt)
        for k, n in res.names.items():
            names.setdefault(k, n)
    return features, failures, counts, names


def _progress(items: Iterable, enabled: bool, total: int | None = None) -> Iterable:
    """``items`` with a progress bar on stderr when ``enabled``."""
    from ser.progress import track

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    return track(items, "features", total=total, enabled=enabled)
